"""Paper-scale one-step check (slow; run with `pytest -m slow tests/test_paper_scale.py -s`).

N = 100 points on the unit sphere in d = 784, +-0.5 labels, 3 ReLU layers (no bias), float64.
One parameter-space step of each method at lr = 1/alpha (alpha measured from the empirical
operator) must cut the training loss by >= 100x (exact, BD) or >= 15x (BTD, K-FAC, unit-wise with
its default damping `methods.unitwise.default_damping`), and by more at width 4096 than at 1024. docs/theory.md's
independent reference at width 4096: 148x, 226x, 21x, 30x (exact, BD, BTD, K-FAC).
"""
from __future__ import annotations

import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import engine  # noqa: E402
from ntkngd.networks import empirical  # noqa: E402
from ntkngd.data import sphere  # noqa: E402
from ntkngd.dynamics.trajectory import mse  # noqa: E402
from ntkngd.methods import get_method  # noqa: E402

METHODS = ("exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise")
MIN_FALL = {"exact": 100, "block_diagonal": 100, "block_tridiagonal": 15, "kfac": 15,
            "unit_wise": 15}


def one_step_falls(width: int, seed: int = 0) -> dict:
    """method -> (loss before / loss after one step at lr = 1/alpha, measured alpha)."""
    data = sphere(100, 10, 784, seed=seed)
    x, y = data.x_train, data.y_train
    net = ng.mlp(3, width, "relu", W_std=2 ** 0.5, b_std=0.0, out_dim=1)
    _, params = net.init_fn(jax.random.PRNGKey(seed), (-1, 784))
    K, f0 = empirical.kernels_and_outputs(net, params, x)
    g = np.asarray(f0) - y
    loss0 = float(mse(np.asarray(f0), y))
    out = {}
    for m in METHODS:
        t = time.perf_counter()
        rho = float(get_method(m).resolve_damping(K, None))     # the default of every entry point
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ng.TheoryConditionWarning)
            alpha = ng.operator(m, K, rho).alpha
            sig = engine.signals(m, K, rho, g)
        d = net.split_update(params, empirical.contract(K.layer_inputs_train, sig))
        new = engine.apply_update(params, d, 1.0 / alpha)
        loss1 = float(mse(np.asarray(empirical.outputs(net, new, x)), y))
        out[m] = (loss0 / loss1, alpha)
        print(f"width {width:5d} {m:>18s}: alpha {alpha:9.4g}  loss {loss0:.4g} -> {loss1:.4g} "
              f"({loss0 / loss1:7.1f}x)  rho {rho:.2e}  {time.perf_counter() - t:.1f}s", flush=True)
    return out


@pytest.mark.slow
def test_one_step_paper_scale():
    small, large = one_step_falls(1024), one_step_falls(4096)
    for m in METHODS:
        assert large[m][0] >= MIN_FALL[m], (m, large[m])
        assert large[m][0] > small[m][0], (m, small[m], large[m])
    assert large["kfac"][1] == pytest.approx(201, rel=1e-6)      # N (L - 1) + 1
    assert large["exact"][1] == pytest.approx(1, rel=1e-6)
    assert large["block_diagonal"][1] == pytest.approx(3, rel=1e-6)
