"""Quiet, lazy start-up: `import ntkngd` and the command print nothing but their own output,
TensorFlow is never loaded, and neural_tangents.experimental is still there on request."""
import os
import subprocess
import sys

import pytest

import ntkngd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, as_users: bool = True, **kw):
    """python args in a fresh interpreter; as_users: with JAX's default compilation (not the
    suite's fast one, conftest), for the tests of what users see on screen."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # no help
    if as_users:
        env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
        env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
            "--xla_cpu_parallel_codegen_split_count=1", "").strip()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT, **kw)


def test_import_prints_nothing_and_loads_no_tensorflow():
    code = ("import sys, ntkngd\n"
            "assert 'jax' not in sys.modules and 'neural_tangents' not in sys.modules\n"
            "import jax; jax.config.update('jax_enable_x64', True)\n"
            "import numpy as np\n"
            "net = ntkngd.mlp(3, 16)\n"
            "K = ntkngd.analytic_kernels(net, np.eye(4))\n"
            "op = ntkngd.operator('block_diagonal', K)\n"
            "print(op.alpha, 'tensorflow' in sys.modules)\n")
    out = _run(["-c", code])
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    alpha, tf_loaded = out.stdout.split()
    assert float(alpha) == pytest.approx(3.0, rel=1e-12)      # block diagonal: alpha = L
    assert tf_loaded == "False"


def test_help_prints_only_help():
    out = _run(["-m", "ntkngd", "--help"])
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("usage: ntkngd")


def test_a_command_prints_only_its_output():
    out = _run(["-m", "ntkngd", "check", "--n-train", "6", "--width", "32", "--methods", "exact"])
    assert out.returncode == 0 and out.stderr == ""
    assert "exact  alpha measured 1  predicted 1" in out.stdout


def test_experimental_subpackage_still_importable_on_demand():
    """With TensorFlow installed (`pip install .`) the real subpackage loads on first use; in the
    lean environment (requirements.lock) the first use raises an ImportError saying what is
    missing and how to get it, and ntkngd itself never needs it."""
    import importlib.util
    code = ("import sys, ntkngd, neural_tangents as nt\n"
            "assert 'tensorflow' not in sys.modules\n"
            "try:\n"
            "    from neural_tangents.experimental import empirical_ntk_fn_tf\n"
            "except ImportError as e:\n"
            "    print('ImportError', str(e).replace(' ', '_'))\n"
            "    raise SystemExit\n"
            "import neural_tangents.experimental as ex\n"
            "print(callable(empirical_ntk_fn_tf), 'tensorflow' in sys.modules,"
            " type(ex).__name__, nt.experimental is ex, ex.__file__.endswith('__init__.py'))\n")
    out = _run(["-c", code])
    assert out.returncode == 0, out.stderr[-2000:]
    if importlib.util.find_spec("tensorflow") is None:
        kind, message = out.stdout.split()
        assert kind == "ImportError"
        assert "'tensorflow'" in message and "pip_install_tensorflow==2.19.1" in message
    else:
        assert out.stdout.split() == ["True", "True", "module", "True", "True"]


def _dist_key(name: str) -> str:
    """A distribution name normalized as PEP 503 does (case, runs of -_. folded to -)."""
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict:
    """requirements.lock as {normalized name: version}."""
    pins = {}
    with open(os.path.join(ROOT, "requirements.lock")) as fh:
        for line in fh:
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pins[_dist_key(name)] = version
    return pins


def test_lock_file_pins_a_lean_stack():
    """requirements.lock pins exact versions, TensorFlow and tf2jax left out, and keeps the pins
    of pyproject.toml's direct requirements (neural-tangents, jax, numpy, ...)."""
    import re
    pins = _lock()
    assert "tensorflow" not in pins and "tf2jax" not in pins
    with open(os.path.join(ROOT, "pyproject.toml")) as fh:
        direct = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', fh.read())
    for name, version in direct:
        key = _dist_key(name)
        if key not in ("tensorflow", "tf2jax"):
            assert pins.get(key) == version, (name, version, pins.get(key))


def test_locked_environment_runs_the_public_api_without_tensorflow():
    """In the environment `make` installs (exactly the lock's distributions), TensorFlow is not
    installed, and every public name resolves and the main paths run: analytic and empirical
    kernels, every built-in operator, predict, isotropy, a finite-width direction and training,
    CNN blocks."""
    from importlib import metadata
    installed = {_dist_key(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    extra = set(installed) - set(_lock()) - {"ntkngd", "pip", "setuptools"}
    assert not extra, f"the test environment is not the locked one: {sorted(extra)}"
    code = ("import sys, importlib.util, ntkngd as ng\n"
            "assert importlib.util.find_spec('tensorflow') is None\n"
            "[getattr(ng, n) for n in ng.__all__]\n"
            "import jax; jax.config.update('jax_enable_x64', True)\n"
            "import numpy as np\n"
            "x = np.random.RandomState(0).randn(6, 5); x /= np.linalg.norm(x, axis=1)[:, None]\n"
            "y = np.sign(x[:, :1]) / 2\n"
            "net = ng.mlp(3, 32)\n"
            "K = ng.analytic_kernels(net, x, x[:3])\n"
            "for m in ('gd', 'exact', 'block_diagonal', 'block_tridiagonal', 'kfac'):\n"
            "    op = ng.operator(m, K)\n"
            "    ng.isotropy(op); ng.predict(op, 0 * y, y, 0 * y[:3], steps=2)\n"
            "p = net.init_fn(jax.random.PRNGKey(0), (-1, 5))[1]\n"
            "ng.ngd_direction('kfac', net, p, x, y)\n"
            "ng.train('exact', net, p, (x, y, x[:3], y[:3]), steps=1)\n"
            "cnn = ng.cnn(4, depth=1)\n"
            "img = np.random.RandomState(1).randn(3, 4, 4, 1)\n"
            "ng.analytic_kernels(cnn, img)\n"
            "pc = cnn.init_fn(jax.random.PRNGKey(0), (-1, 4, 4, 1))[1]\n"
            "ng.ngd_direction('kfac', cnn, pc, img, y[:3])\n"
            "print('ok', 'tensorflow' in sys.modules)\n")
    out = _run(["-c", code], as_users=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "False"]


def test_every_public_name_resolves_lazily():
    for name in ntkngd.__all__:
        assert getattr(ntkngd, name) is not None
    assert set(ntkngd.__all__) <= set(dir(ntkngd))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ntkngd.nope


# Public names still without a docstring (none: the engine rewrite added them). Add a name
# here only with a reason.
_DOCSTRING_PENDING: set = set()


def test_every_public_name_has_a_docstring():
    import inspect
    missing = []
    for name in ntkngd.__all__:
        obj = getattr(ntkngd, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                fn = value.fget if isinstance(value, property) else getattr(value, "func", value)
                if not attr.startswith("_") and inspect.isfunction(fn) and \
                        not (fn.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert sorted(set(missing) - _DOCSTRING_PENDING) == []


def test_static_names_match_the_registries():
    """The command line lists these without importing JAX; they must be the registries' own."""
    from ntkngd import _names, losses, methods
    builtin = tuple(n for n in methods.method_names() if n in methods._BUILTIN)
    assert builtin == _names.METHODS
    assert {k: v for k, v in methods.ALIASES.items() if k in methods._BUILTIN} == \
        _names.METHOD_ALIASES
    assert tuple(sorted(losses.LOSSES)) == _names.LOSSES
    assert losses._ALIASES == _names.LOSS_ALIASES
    for alias, name in _names.METHOD_ALIASES.items():
        assert methods.canonical(alias) == name == _names.canonical_method(alias)


def test_help_and_argument_errors_import_no_jax():
    code = ("import sys\n"
            "from ntkngd import cli\n"
            "for argv in (['--help'], ['train', '--help'], ['train', '--seed', '-3'],\n"
            "             ['train', '--method', 'btd', '--loss', 'nope']):\n"
            "    try:\n"
            "        cli.main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('jax' in sys.modules, file=sys.stderr)\n")
    out = _run(["-c", code])
    assert out.stderr.strip().splitlines()[-1] == "False"
    assert "block_tridiagonal" in out.stdout and "softmax_cross_entropy" in out.stdout


def test_stax_is_neural_tangents_stax_loaded_quietly():
    code = ("import sys, ntkngd as ng\n"
            "net = ng.serial(ng.stax.Conv(4, (3, 3)), ng.stax.Relu(), ng.stax.GlobalAvgPool(),\n"
            "                ng.stax.Dense(1))\n"
            "import neural_tangents.stax as s\n"
            "print(ng.stax is s, net.depth, 'tensorflow' in sys.modules)\n")
    out = _run(["-c", code])
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    assert out.stdout.split() == ["True", "2", "False"]


def test_public_names_and_v01_names_that_warn_once():
    """At most 40 public names; the v0.1 names (ntkngd.compat) are not among them, and reading one
    as ntkngd.<name> warns once (DeprecationWarning naming the replacement), then not again."""
    from ntkngd import compat
    assert len(ntkngd.__all__) <= 40 and not set(compat.NAMES) & set(ntkngd.__all__)
    code = ("import sys, warnings, ntkngd\n"
            "from ntkngd import compat\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    for name in sorted(compat.NAMES):\n"
            "        assert getattr(ntkngd, name) is getattr(compat, name)\n"
            "        assert getattr(ntkngd, name) is getattr(compat, name)\n"
            "dep = [str(w.message) for w in caught if w.category is DeprecationWarning\n"
            "       and str(w.message).startswith('ntkngd.')]\n"
            "print(len(dep), len(compat.NAMES), all('use ' in m for m in dep))\n")
    out = _run(["-c", code])
    assert out.returncode == 0, out.stderr[-2000:]
    n_warned, n_names, named = out.stdout.split()
    assert n_warned == n_names == "11" and named == "True"
