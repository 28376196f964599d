"""H^+ r at confident predictions: binary and softmax cross-entropy without overflow or 0 x inf.

Reference values in closed form: binary CE x = (p - y) / (p (1 - p)) = -(1 + e^{-f}) for y = 1 and
1 + e^{f} for y = 0; softmax CE x = (1/p_y) (1/C - y) for one-hot y.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkngd as ng
from conftest import sphere_points

BCE = ng.get_loss("bce")
CE = ng.get_loss("ce")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_pinv_residual_up_to_logit_1e3(dtype):
    f = np.array([1e3, 710.0, 125.6, 89.0, 20.0, 0.5, -0.5, -20.0, -89.0, -125.6, -710.0, -1e3])
    y = (f > 0).astype(float)                              # every prediction correct
    x = np.asarray(BCE.pinv_residual(jnp.asarray(f[:, None], dtype), jnp.asarray(y[:, None], dtype)))
    expected = np.where(y > 0.5, -1 - np.exp(-np.abs(f)), 1 + np.exp(-np.abs(f)))
    assert x.dtype == dtype
    np.testing.assert_allclose(x[:, 0], expected, rtol=4 * np.finfo(dtype).eps)
    # confident wrong predictions that are representable: 1 + e^{|f|}
    fw = np.array([30.0, -30.0, 80.0])
    yw = np.array([0.0, 1.0, 0.0])
    xw = np.asarray(BCE.pinv_residual(jnp.asarray(fw[:, None], dtype),
                                      jnp.asarray(yw[:, None], dtype)))[:, 0]
    np.testing.assert_allclose(xw, [1 + np.exp(30.0), -1 - np.exp(30.0), 1 + np.exp(80.0)],
                               rtol=64 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_pinv_apply_in_the_log_domain(dtype):
    """r / (p (1 - p)) for residuals given exactly: r = -(1 - p) for y = 1 at logit f, so x = -1/p."""
    f = np.array([1e3, 300.0, 60.0, 5.0])
    r = -np.exp(-f) / (1 + np.exp(-f))                     # -(1 - p), representable for f <= 60
    x = np.asarray(BCE.pinv_apply(jnp.asarray(f[:, None], dtype), jnp.asarray(r[:, None], dtype)))
    expected = -(1 + np.exp(-f))
    ok = np.abs(r) > np.finfo(dtype).tiny                  # r itself representable in the dtype
    np.testing.assert_allclose(x[ok, 0], expected[ok], rtol=64 * np.finfo(dtype).eps)
    assert np.all(np.isfinite(x))


@pytest.mark.parametrize("gap", [5.0, 40.0, 300.0])
def test_ce_pinv_apply_without_cancellation(gap):
    """r = p - y computed in floating point: 1 - p_y rounds to 0 once e^{-gap} < eps; the zero-sum
    reconstruction recovers H^+ r = (1/p_y)(1/C - y) exactly (the old form was 3x too small at 40)."""
    f = jnp.asarray([[gap, 0.0, 0.0], [0.0, -gap, 1.0]])
    y = jnp.asarray([[1.0, 0, 0], [1.0, 0, 0]])
    exact = np.asarray(CE.pinv_residual(f, y))
    x = np.asarray(CE.pinv_apply(f, CE.residual(f, y)))
    np.testing.assert_allclose(x, exact, rtol=1e-12, atol=1e-12 * np.abs(exact).max())


def test_ce_pinv_apply_is_finite_where_p_underflows():
    f = jnp.asarray([[800.0, 0.0, 0.0]])
    x = np.asarray(CE.pinv_apply(f, jnp.asarray([[0.0, 0.0, 0.0]])))
    assert np.all(np.isfinite(x)) and np.all(x == 0.0)     # H^+ 0 = 0, no NaN from 0 x inf


def test_loss_operator_call_matches_from_targets_at_a_large_gap():
    x = sphere_points(4, 5, seed=0)
    K = ng.analytic_kernels(ng.mlp(2, 64, out_dim=3), x)
    from ntkngd.dynamics.loss_flow import loss_operator
    op = loss_operator(ng.get_method("exact"), K, 0.0, CE)
    f = jnp.asarray(np.array([[40.0, 0, 0], [0, 45.0, 0], [0, 0, 50.0], [38.0, 0, 1.0]]))
    y = jnp.asarray(np.eye(3)[[0, 1, 2, 0]])
    a = np.asarray(op(f, CE.residual(f, y))[0])
    b = np.asarray(op.from_targets(f, y)[0])
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_bce_exact_ngd_discrete_map_stays_finite():
    """Exact NGD on BCE at lr 1 moves every logit by |x| >= 1 per step: after 800 steps logits pass
    800, where (1 - y)(1 + e^f) was 0 x inf; the loss must go to 0, the outputs stay finite."""
    x = sphere_points(4, 5, seed=0)
    K = ng.analytic_kernels(ng.mlp(2, 64), x)
    from ntkngd.dynamics.loss_flow import loss_operator
    op = loss_operator(ng.get_method("exact"), K, 0.0, BCE)
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    traj = ng.predict(op, np.zeros((4, 1)), y, lr=1.0, steps=800)
    assert np.all(np.isfinite(traj.train))
    assert np.all(np.abs(traj.train[-1]) > 700)
    assert traj.train_loss[-1] < 1e-300 or traj.train_loss[-1] == 0.0


def test_bce_direction_in_float32_with_a_confident_logit():
    """float32 network, every point correct, one logit above 88.7 (e^f overflows float32): the
    undamped exact-NGD direction is finite and equals the float64 one to float32 accuracy."""
    net = ng.mlp(2, 32)
    x = sphere_points(4, 5, seed=1)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    f = np.asarray(net.apply_fn(params, x))[:, 0]
    scale = 125.6 / np.abs(f).max()
    params = [tuple(None if a is None else a * (scale if i == 2 else 1.0) for a in p)
              if p else p
              for i, p in enumerate(params)]
    f = np.asarray(net.apply_fn(params, x))[:, 0]
    assert np.abs(f).max() > 88.7
    y = (f > 0).astype(float)[:, None]
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    d32 = ravel_pytree(ng.ngd_direction("exact", net, p32, x.astype(np.float32),
                                        y.astype(np.float32), 0.0, loss="bce"))[0]
    d64 = ravel_pytree(ng.ngd_direction("exact", net, params, x, y, 0.0, loss="bce"))[0]
    assert np.all(np.isfinite(np.asarray(d32)))
    # float32: the NTK's condition number here is small (4 points, width 32): 1e-3 is ample
    assert np.linalg.norm(np.asarray(d32, np.float64) - d64) < 1e-3 * np.linalg.norm(d64)
