"""Test configuration: float64 everywhere for the analytic paths, quiet TensorFlow."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# The tests' programs are tiny and each is compiled once, so XLA's LLVM optimization passes cost
# more than they save: most of the suite's time was compilation. Without them the suite runs ~2x
# faster; the programs' semantics (HLO) and the BLAS/LAPACK calls are the same, so results agree
# with an optimized build to round-off, which every tolerance already allows. Subprocess tests
# (test_startup, the tutorial notebook) run with the default optimizations, as users do.
# NTKNGD_TEST_OPTIMIZE=1 runs the suite with them.
jax.config.update("jax_disable_most_optimizations", os.environ.get("NTKNGD_TEST_OPTIMIZE") != "1")

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
