"""The loss components through every method with a theory, and the silent-wrong-answer regressions
(cross-entropy pseudo-inverse at confident logits, dtype-scaled rank cuts, unit-wise damping,
predict input checks, divergence)."""
from __future__ import annotations

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import losses  # noqa: E402

N, NT, D, L = 6, 3, 10, 3
PATTERN = ng.block_pattern([[1, 1, 0], [1, 1, 0], [0, 0, 1]], "merged_12")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        yield


def _problem(loss, c, width=24, seed=0):
    rs = np.random.RandomState(seed)
    x = rs.randn(N + NT, D)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if loss.name == "softmax_cross_entropy":
        y = np.eye(c)[rs.randint(0, c, N + NT)]
    elif loss.name == "sigmoid_binary_cross_entropy":
        y = rs.randint(0, 2, (N + NT, 1)).astype(float)
    else:
        y = 0.5 * np.sign(rs.randn(N + NT, c))
    net = ng.mlp(L, width, "relu", b_std=0.1, out_dim=c)
    params = net.init_fn(jax.random.PRNGKey(seed), (-1, D))[1]
    return net, params, x[:N], y[:N], x[N:]


def _jvp(net, params, d, x):
    return np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1])


LOSS_CASES = [(losses.mse, 2), (losses.softmax_cross_entropy, 3),
              (losses.sigmoid_binary_cross_entropy, 1)]
PATTERN_METHODS = ["gd", "exact", "block_diagonal", "block_tridiagonal", PATTERN]


@pytest.mark.parametrize("loss,c", LOSS_CASES, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("rho", [0.0, 1e-3])
def test_every_pattern_method_step_is_its_operator(loss, c, rho):
    """Finite width, every loss: J d = G(f) r and J' d = G'(f) r (the same dual system)."""
    net, params, x, y, xt = _problem(loss, c)
    K = ng.empirical_kernels(net, params, x, xt)
    f = net.apply_fn(params, x)
    for m in PATTERN_METHODS:
        op = ng.operator(m, K, rho, loss=loss.name)
        d = ng.ngd_direction(m, net, params, x, y, damping=rho, loss=loss)
        g, gt = op.from_targets(f, y) if isinstance(op, ng.LossOperator) else \
            (op.train @ (np.asarray(f) - y).reshape(-1), op.test @ (np.asarray(f) - y).reshape(-1))
        g, gt = np.asarray(g).reshape(-1), np.asarray(gt).reshape(-1)
        scale = np.abs(g).max()
        np.testing.assert_allclose(_jvp(net, params, d, x).reshape(-1), g, rtol=0,
                                   atol=1e-9 * scale, err_msg=str(m))
        np.testing.assert_allclose(_jvp(net, params, d, xt).reshape(-1), gt, rtol=0,
                                   atol=1e-9 * scale, err_msg=str(m))


@pytest.mark.parametrize("loss,c", LOSS_CASES[1:], ids=lambda v: getattr(v, "name", str(v)))
def test_min_norm_step_is_alpha_times_pinv_residual(loss, c):
    """rho -> 0: the training step is alpha H^+ r up to shifts in null(H), at finite width."""
    net, params, x, y, _ = _problem(loss, c)
    f = net.apply_fn(params, x)
    xr = np.asarray(loss.pinv_residual(f, jnp.asarray(y)))
    proj = loss.basis(c) @ loss.basis(c).T
    K = ng.empirical_kernels(net, params, x)
    for m, alpha in (("exact", 1.0), ("block_diagonal", 3.0), (PATTERN, 2.0)):
        jd = _jvp(net, params, ng.ngd_direction(m, net, params, x, y, 0.0, loss), x)
        np.testing.assert_allclose(jd @ proj, alpha * xr, atol=1e-9 * np.abs(xr).max())
        rep = ng.isotropy(ng.operator(m, K, 0.0, loss=loss))   # M on range(H): alpha I
        assert abs(rep.alpha - alpha) < 1e-9 * alpha and rep.deviation < 1e-9


@pytest.mark.parametrize("loss,c", LOSS_CASES[1:], ids=lambda v: getattr(v, "name", str(v)))
def test_kfac_and_unit_wise_any_loss_measured_not_operator(loss, c):
    net, params, x, y, xt = _problem(loss, c)
    K = ng.empirical_kernels(net, params, x, xt)
    for m in ("kfac", "unit_wise"):
        with pytest.raises(NotImplementedError, match="no function-space operator"):
            ng.operator(m, K, 1e-3, loss=loss)
        log = ng.train(m, net, params, (x, y, xt, y[:NT]), steps=2, loss=loss, damping=1e-3)
        assert np.all(np.isfinite(log.alpha_fit)) and log.train_loss[2] < log.train_loss[0]


def test_sigmoid_bce_matches_autodiff_and_trains():
    net, params, x, y, xt = _problem(losses.sigmoid_binary_cross_entropy, 1)
    f = net.apply_fn(params, x)
    bce = losses.sigmoid_binary_cross_entropy
    r_auto = N * jax.grad(lambda ff: bce.value(ff, y))(f)
    np.testing.assert_allclose(bce.residual(f, y), r_auto, rtol=1e-12)
    h_auto = N * jax.hessian(lambda ff: bce.value(ff, y))(f)[:, 0, :, 0]
    np.testing.assert_allclose(bce.hessian(f)[:, 0, 0], np.diag(h_auto), rtol=1e-12)
    d = ng.ngd_direction("gd", net, params, x, y, loss="sigmoid_binary_cross_entropy")
    g = jax.grad(lambda p: bce.value(net.apply_fn(p, x), y))(params)
    for a, b in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    log = ng.train("exact", net, params, (x, y, xt, y[:NT]), steps=3, loss="bce")
    assert log.train_loss[3] < log.train_loss[0]
    assert np.all(np.diff(log.pred_emp_train_loss) < 0) and np.all(np.diff(log.pred_inf_train_loss) < 0)
    with pytest.raises(ValueError, match="binary targets"):
        ng.ngd_direction("exact", net, params, x, y + 0.5, loss="bce")


def test_loss_names_and_aliases():
    assert ng.get_loss("ce") is losses.softmax_cross_entropy
    assert ng.get_loss(losses.mse) is losses.mse
    with pytest.raises(ValueError, match="unknown loss"):
        ng.get_loss("hinge")


# ------------------------------------------------------------------ issue 9, silent wrong answers
@pytest.mark.parametrize("gap", [0.0, 5.0, 40.0, 100.0, 800.0, 1e3])
def test_ce_pinv_exact_for_confident_samples(gap):
    """Logits [0, -g, -g], target 0: H^+ (p - y) = [-2/3, 1/3, 1/3] (p_y -> 1) for every g."""
    f = jnp.array([[0.0, -gap, -gap]])
    y = jnp.array([[1.0, 0.0, 0.0]])
    x = np.asarray(losses.softmax_cross_entropy.pinv_residual(f, y))[0]
    p = np.exp(-np.logaddexp(0.0, np.logaddexp(-gap, -gap)))     # p_y, exactly rounded
    np.testing.assert_allclose(x, np.array([-2, 1, 1]) / (3 * p), rtol=1e-14)
    if gap >= 40:
        np.testing.assert_allclose(x, [-2 / 3, 1 / 3, 1 / 3], rtol=1e-14)


@pytest.mark.parametrize("gap", [0.0, 5.0, 40.0, 100.0, 700.0])
def test_ce_hessian_keeps_its_diagonal_for_confident_samples(gap):
    """H = diag(p) - p p^T at logits [0, -g, -g]: H_00 = p_0 (p_1 + p_2) to relative eps (1 - p_0
    cancels to 0 for g >= 37 in float64), and H stays positive semi-definite (row sums 0)."""
    h = np.asarray(losses.softmax_cross_entropy.hessian(jnp.array([[0.0, -gap, -gap]])))[0]
    log_z = np.logaddexp(0.0, np.log(2.0) - gap)
    p0, p1 = np.exp(-log_z), np.exp(-gap - log_z)
    np.testing.assert_allclose(np.diag(h), [p0 * 2 * p1, p1 * (p0 + p1), p1 * (p0 + p1)],
                               rtol=1e-14)
    eps = np.finfo(np.float64).eps
    assert np.linalg.eigvalsh(h).min() >= -8 * eps * np.abs(h).max()
    np.testing.assert_allclose(h.sum(1), 0.0, atol=4 * eps * np.abs(h).max())


def test_ce_prediction_finite_for_confident_logits():
    """Exact NGD at infinite width, alpha = 1: one step moves f by -lr H^+ r = -lr [-2/3, 1/3, 1/3]
    per confident sample (v0.1 returned a third of it at g = 40, NaN at g = 800)."""
    net = ng.mlp(3, 64, "relu", out_dim=3)
    x = np.random.RandomState(0).randn(4, 5)
    K = ng.analytic_kernels(net, x)
    f0 = np.array([[0.0, -g, -g] for g in (40.0, 100.0, 800.0, 1e3)])
    y = np.eye(3)[[0, 0, 0, 0]]
    traj = ng.predict(ng.operator("exact", K, 0.0, loss="ce"), f0, y, lr=0.5, steps=1)
    np.testing.assert_allclose(traj.train[1] - f0, -0.5 * np.tile([-2 / 3, 1 / 3, 1 / 3], (4, 1)),
                               atol=1e-9)


def test_float32_kfac_rank_follows_dtype():
    """N = 20 > d = 6, float32: rank(Q_1) = 6, alpha = 6 + N + 1 = 27 (v0.1: rank 14, alpha 35)."""
    n, d = 20, 6
    net = ng.mlp(3, 64, "relu", out_dim=1)
    params = net.init_fn(jax.random.PRNGKey(0), (-1, d))[1]
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    x = np.random.RandomState(1).randn(n, d)
    for p in (p32, params):
        K = ng.empirical_kernels(net, p, x.astype(np.asarray(jax.tree_util.tree_leaves(p)[0]).dtype))
        with pytest.warns(ng.TheoryConditionWarning, match="rank 6 < N = 20"):
            op = ng.operator("kfac", K, 0.0)
        assert op.alpha == pytest.approx(27.0, rel=1e-4)


def test_linear_network_never_below_least_squares_floor_float32():
    """Identity activation, N > d, float32: the one-step exact-NGD prediction equals the
    least-squares floor (never below it, as v0.1's float64 rank cut on float32 kernels gave)."""
    n, d = 30, 5
    rs = np.random.RandomState(2)
    x, y = rs.randn(n, d), rs.randn(n, 1)
    net = ng.mlp(2, 64, "identity", out_dim=1)
    params = net.init_fn(jax.random.PRNGKey(3), (-1, d))[1]
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    K = ng.empirical_kernels(net, p32, x.astype(np.float32))
    f0 = np.asarray(net.apply_fn(p32, x.astype(np.float32)), np.float64)
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    floor = 0.5 * np.sum((x @ w - y) ** 2) / n
    for m in ("exact", "block_diagonal", "kfac"):
        traj = ng.predict(ng.operator(m, K, 0.0), f0, y, lr=None if m != "kfac" else 1.0 / (n + 1),
                          steps=1)
        assert traj.train_loss[1] >= floor * (1 - 1e-4), m
        if m != "kfac":
            assert traj.train_loss[1] == pytest.approx(floor, rel=1e-3), m


def test_unit_wise_large_damping_operator_matches_step():
    """rho = 1e4: G = sum Theta_i (Theta_i + s)^-1 without cancellation; the prediction agrees
    with the parameter step (independent N x N Woodbury solves)."""
    net, params, x, y, xt = _problem(losses.mse, 1)
    K = ng.empirical_kernels(net, params, x, xt)
    g = (np.asarray(net.apply_fn(params, x)) - y).reshape(-1)
    for rho in (1e4, 1e8):
        op = ng.operator("unit_wise", K, rho)
        jd = _jvp(net, params, ng.ngd_direction("unit_wise", net, params, x, y, rho), x)
        np.testing.assert_allclose(jd.reshape(-1), op.train @ g, rtol=1e-9,
                                   atol=1e-12 * np.abs(op.train @ g).max())
        assert op.alpha > 0


def test_predict_rejects_bad_steps_and_lonely_y_test():
    net = ng.mlp(2, 32, out_dim=1)
    x = np.random.RandomState(0).randn(5, 4)
    op = ng.operator("exact", ng.analytic_kernels(net, x, x[:2]))
    f0, y = np.zeros((5, 1)), np.ones((5, 1))
    for bad in (2.5, True, "3", np.float64(2.0)):
        with pytest.raises(ValueError, match="steps"):
            ng.predict(op, f0, y, steps=bad)
    with pytest.raises(ValueError, match="f0_test"):
        ng.predict(op, f0, y, steps=2, y_test=np.ones((2, 1)))
    assert ng.predict(op, f0, y, steps=np.int64(2)).train.shape == (3, 5, 1)


def test_ce_solver_tolerances_checked():
    net = ng.mlp(2, 32, out_dim=3)
    x = np.random.RandomState(0).randn(4, 4)
    K = ng.analytic_kernels(net, x)
    y = np.eye(3)[[0, 1, 2, 0]]
    for bad in (np.nan, -1.0, 0.0):
        with pytest.raises(ValueError, match="rtol"):
            ng.ce_predict("exact", K, np.zeros((4, 3)), y, times=[1.0], rtol=bad)


def test_diverging_ce_run_blames_the_step():
    net, params, x, y, xt = _problem(losses.softmax_cross_entropy, 3)
    with pytest.raises(FloatingPointError, match="diverged at step 1"):
        ng.train("exact", net, params, (x, y, xt, y[:NT]), steps=2, lr=1e300, loss="ce")


def test_damped_btd_ce_flow_fails_fast_with_the_cause():
    """Damped BTD (indefinite S) cross-entropy flow: F_S + rho I turns singular as the softmax
    saturates; the solver stops at once with the cause (v0.1: minutes, then EquinoxRuntimeError).
    The damped positive semi-definite pattern (BD) and the rho -> 0 BTD flow integrate."""
    rs = np.random.RandomState(0)
    x = rs.randn(12, 8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.eye(3)[rs.randint(0, 3, 12)]
    K = ng.analytic_kernels(ng.mlp(3, 64, "relu", out_dim=3), x)
    f0, times = np.zeros((12, 3)), [1.0, 10.0, 100.0]
    with pytest.raises(ValueError, match="could not be integrated.*indefinite"):
        ng.ce_predict("btd", K, f0, y, times=times, damping=1e-5)
    for m, rho in (("bd", 1e-5), ("btd", 0.0)):
        traj = ng.ce_predict(m, K, f0, y, times=times, damping=rho)
        assert np.all(np.isfinite(traj.train)) and traj.train_loss[-1] < 1e-4


def test_loss_values_refuse_targets_that_would_broadcast():
    """f (N, 1) against y (N,) broadcast to (N, N) and gave a wrong loss without a word; now every
    loss value needs y with f's last two axes (a leading time axis on f still broadcasts)."""
    f, y = np.zeros((4, 1)), np.ones(4)
    for loss in (losses.mse, losses.sigmoid_binary_cross_entropy):
        with pytest.raises(ValueError, match=r"share their last two axes.*\(4, 1\) and \(4,\)"):
            loss.value(f, y)
    with pytest.raises(ValueError, match="share their last two axes"):
        losses.softmax_cross_entropy.value(np.zeros((4, 3)), np.eye(3))
    traj = losses.mse.value(np.stack([f, f + 1.0]), y[:, None])           # (T, N, C) vs (N, C)
    np.testing.assert_allclose(traj, [0.5, 0.0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="finite targets"):
        losses.class_encoding(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match=r"share their last axis.*\(4, 2\), \(2, 4\)"):
        losses.class_encoding(np.zeros((4, 2)), np.zeros((2, 4)))
