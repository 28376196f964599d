"""`ntkngd figures --devices K` and the generalization figure's theory on a device mesh.

The sharded theory (2 simulated CPU devices, a fresh interpreter: the device count must be set
before JAX starts) against the dense path on the same inputs (raw digits 0 vs 1, N = 80 > d = 64,
so K-FAC's G is not isotropic), float64: both solve the same positive-definite systems by
backward-stable factorizations of the same kernels, so they agree to about N eps cond; asserted
to 1e-8 relative (the issue's float64 tolerance: N eps cond for cond up to 5e5; measured:
1.3e-14 at most). The training loss at t -> infinity is round-off around 0 (the fixed points
interpolate) and is compared absolutely, against 1e-8 x the targets' mean square. G's slowest
rate: exact for the isotropic and diagonal methods, Lanczos for gd (lambda_max to 1e-13,
lambda_min on G^{-1} to 1e-10). `ntkngd check --devices 2` runs in the same interpreter.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ntkngd import cli
from ntkngd.sharded.mesh import _with_host_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac")

_SCRIPT = r"""
import json, sys
from ntkngd.sharded.mesh import request_devices
request_devices(2)
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from ntkngd.figures import generalization as G, profiles
p = profiles.get("tiny")
out = {}
for prep, n in (("raw", 80),):
    ds, _ = G._data(p, n, prep)
    for devices in (None, 2):
        r = G._theory(p, ds, 1, devices)
        out[f"{prep}/{devices}"] = {k: (v if isinstance(v, str) else float(v)) for k, v in r.items()}
import contextlib, io
from ntkngd import cli
with contextlib.redirect_stdout(io.StringIO()) as report:
    code = cli.main(["check", "--devices", "2", "--width", "256",
                     "--methods", "gd", "exact", "kfac", "unit_wise"])
print("RESULT" + json.dumps({"theory": out, "check": report.getvalue(), "check_code": code}))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def two_devices() -> dict:
    """One fresh interpreter with 2 simulated devices for both tests below (JAX starts once)."""
    proc = _run(_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_generalization_theory_on_two_devices_equals_dense(two_devices):
    res = two_devices["theory"]
    for prep in ("raw",):
        dense, sharded = res[f"{prep}/None"], res[f"{prep}/2"]
        assert "gd/backend" not in dense
        for m in METHODS:
            assert sharded[f"{m}/backend"] == "sharded", (prep, m)
            for key in ("test_loss", "test_acc", "lowest_eig"):
                a, b = sharded[f"{m}/{key}"], dense[f"{m}/{key}"]
                assert np.isfinite(b) and abs(a - b) <= 1e-8 * abs(b), (prep, m, key, a, b)
            assert abs(sharded[f"{m}/train_loss"] - dense[f"{m}/train_loss"]) <= 1e-8 * 0.25
            assert abs(sharded[f"{m}/deviation"] - dense[f"{m}/deviation"]) <= 1e-8 * max(
                1.0, abs(dense[f"{m}/deviation"])), (prep, m)


@pytest.mark.parametrize("value, message", [("0", "must be a positive integer (>= 1), got 0"),
                                            ("-2", "must be a positive integer (>= 1), got -2"),
                                            ("1.5", "must be a positive integer, got '1.5'"),
                                            ("two", "must be a positive integer, got 'two'")])
@pytest.mark.parametrize("command", ["figures", "check"])
def test_devices_flag_rejects_bad_counts(command, value, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--devices", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--devices" in err and message in err


def test_devices_beyond_a_started_backend_is_a_clear_error(capsys, tmp_path):
    import jax
    have = len(jax.devices())          # this process's JAX has started: the flag comes too late
    code = cli.main(["figures", "--profile", "tiny", "--only", "generalization", "--devices",
                     str(have + 1), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--devices {have + 1}: only {have} cpu device(s) available" in err
    assert "already started" in err and "xla_force_host_platform_device_count" in err
    assert not os.listdir(tmp_path)


def test_host_count_flag_is_set_once_and_never_lowered():
    flag = "--xla_force_host_platform_device_count"
    assert _with_host_count("", 4) == f"{flag}=4"
    assert _with_host_count(f"--xla_foo=1 {flag}=2", 4) == f"--xla_foo=1 {flag}=4"
    assert _with_host_count(f"{flag}=8", 4) == f"{flag}=8"


def test_cli_sets_simulated_devices_itself():
    """In a fresh interpreter without XLA_FLAGS, building and parsing `ntkngd figures --devices
    3` leaves JAX's backend unstarted, and the command's request then gets 3 CPU devices."""
    code = ("import sys\nfrom ntkngd import cli\n"
            "args = cli.parser().parse_args(['figures', '--devices', '3'])\n"
            "from ntkngd.sharded.mesh import _backend_started, request_devices\n"
            "assert not _backend_started()\n"
            "print('AVAILABLE', request_devices(args.devices, '--devices'))\n"
            "from ntkngd.sharded import make_mesh\nprint('MESH', make_mesh(3).devices.size)\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "AVAILABLE 3" in proc.stdout and "MESH 3" in proc.stdout


def test_check_devices_reports_the_dense_numbers(two_devices):
    """`ntkngd check --devices 2`: the sharded operators' isotropy report (alpha, deviation,
    condition number: exact for isotropic/diagonal G, Lanczos to 1e-13 / 1e-6 for gd's extremes)
    prints the dense report's digits (6 significant)."""
    assert two_devices["check_code"] == 0
    dense, sharded = two_devices["check"].split("-- infinite width, sharded over 2 devices")
    dense = dense.split("-- infinite width\n", 1)[1]
    for m in ("gd", "exact", "kfac"):
        line = [ln for ln in dense.splitlines() if ln.strip().startswith(m + " ")]
        assert line and line[0] in sharded.splitlines(), m
    assert "unit_wise  not available: method 'unit_wise' is not in the sharded backend" in sharded
