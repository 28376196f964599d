"""Wide-CNN one-step check (slow; `pytest -m slow tests/test_serial_slow.py -s`): N = 12 0-vs-1
8x8 digits (the authors' preprocessing, the data module's default: global standardization + unit
norm), ng.cnn(C) (two 3x3 convolutions, GAP, dense; L = 3), float64, init seed 0, kernels computed
once per network. Exact, block-diagonal and block tri-diagonal NGD, one undamped step at the
paper's lr = 1/alpha (alpha = 1, L, 1'T^+1 = 1).

Measured (experiments/cnn_one_step.py; docs/theory.md section 7), fall of the training loss:
  512 channels:  exact 4.35x, BD 30.9x, BTD 6.92x
  1024 channels: exact 12.3x, BD 57.5x, BTD 14.7x
The finite-width operators are alpha I to round-off, so what is left after the step is the
network's departure from its linearization, which shrinks with channels."""
import jax
import numpy as np
import pytest

import ntkngd as ng
from ntkngd.engine import apply_update
from ntkngd.networks.empirical import kernels_and_outputs, outputs

ALPHAS = {"exact": 1.0, "block_diagonal": 3.0, "block_tridiagonal": 1.0}


def _falls(channels: int, x, y) -> dict:
    net = ng.cnn(channels)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    K, f = kernels_and_outputs(net, params, x)
    loss0 = float(ng.losses.mse.value(np.asarray(f), y))
    falls = {}
    for method, alpha in ALPHAS.items():
        op = ng.operator(method, K, 0.0)
        assert op.alpha == pytest.approx(alpha, abs=1e-8)
        assert op.deviation < 1e-8          # isotropic: the linearized step lands on y
        d = ng.ngd_direction(method, net, params, x, y, 0.0)
        f1 = outputs(net, apply_update(params, d, op.lr), x)
        loss1 = float(ng.losses.mse.value(np.asarray(f1), y))
        falls[method] = loss0 / loss1
        print(f"{channels} channels, {method}: {loss0:.4e} -> {loss1:.4e} ({falls[method]:.2f}x)")
    return falls


@pytest.mark.slow
def test_one_step_falls_tenfold_at_1024_channels():
    ds = ng.data.digits(n_train=12, n_test=10, classes=(0, 1), seed=0)
    x, y = ds.x_train.reshape(-1, 8, 8, 1), ds.y_train
    narrow, wide = _falls(512, x, y), _falls(1024, x, y)
    for method in ALPHAS:
        assert wide[method] > narrow[method], method      # closer to the linear regime
        assert wide[method] >= 10, (method, wide[method])
