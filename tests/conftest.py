"""Test configuration: float64 everywhere for the analytic paths, quiet TensorFlow."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests' programs are tiny and each is compiled once, so XLA's LLVM optimization passes cost
# more than they save: most of the suite's time is compilation (measured: about two thirds of it
# tracing, lowering and compiling). Without the passes the suite runs ~2x faster; the programs'
# semantics (HLO) and the BLAS/LAPACK calls are the same, so results agree with an optimized
# build to round-off, which every tolerance already allows. One LLVM module per program (no split
# for parallel codegen) saves another ~8%: the split only pays on large programs. Set through the
# environment, before JAX starts, so the suite's subprocesses (CLI runs, the notebook, the
# multi-process sharded run) compile the same way; the tests of what users see on screen
# (test_startup) run with JAX's defaults. NTKNGD_TEST_OPTIMIZE=1 runs everything with them.
if os.environ.get("NTKNGD_TEST_OPTIMIZE") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_parallel_codegen_split_count=1"]).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import ntkngd  # noqa: E402,F401  (first: keeps neural-tangents' TensorFlow port unloaded)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def sphere_points(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.RandomState(seed).randn(n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


# The longest files (measured: seconds of test time on 2 cores) first, so that with
# `-n 2 --dist loadfile` no long file starts last and leaves one worker idle at the end. Only the
# order of whole files changes; a file missing here keeps its place after these.
_LONG_FIRST = ("test_curvature_methods.py", "test_figures_cli.py", "test_losses.py",
               "test_serial_methods.py", "test_engine.py", "test_operators.py",
               "test_kernels.py", "test_sharded_cli.py", "test_startup.py",
               "test_network_protocol.py", "test_jit.py", "test_serial_kernels.py",
               "test_sharded.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
