"""Cross-entropy dynamics in function space (the loss flow; v0.1 names from ntkngd.compat)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import compat as ce  # noqa: E402
from ntkngd.dynamics.flows import integrate_flow, iterate_steps  # noqa: E402
from ntkngd.losses import softmax_cross_entropy as CE  # noqa: E402

N, NT, D, C, L = 6, 4, 10, 3, 3


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup():
    rs = np.random.RandomState(0)
    x, xt = _unit(rs.randn(N, D)), _unit(rs.randn(NT, D))
    net = ng.mlp(L, 64, "relu", b_std=0.1, out_dim=C)
    K = ng.analytic_kernels(net, x, xt)
    y = np.eye(C)[rs.randint(0, C, N)]
    yt = np.eye(C)[rs.randint(0, C, NT)]
    f0, f0t = 0.5 * rs.randn(N, C), 0.5 * rs.randn(NT, C)
    return dict(net=net, K=K, y=y, yt=yt, f0=f0, f0t=f0t)


# ------------------------------------------------------------------ helpers
def test_helpers_match_autodiff_and_optax():
    rs = np.random.RandomState(1)
    f = rs.randn(5, 4)
    y = np.eye(4)[rs.randint(0, 4, 5)]
    p = jax.nn.softmax(f)
    hs = ce.softmax_hessian(p)
    np.testing.assert_allclose(hs, jax.vmap(jax.hessian(jax.scipy.special.logsumexp))(f),
                               atol=1e-14)
    r = rs.randn(5, 4)
    r -= r.mean(1, keepdims=True)                        # in range(Hs): zero sum per sample
    x = CE.pinv_apply(jnp.asarray(f), jnp.asarray(r))
    for n in range(5):
        np.testing.assert_allclose(x[n], np.linalg.pinv(np.asarray(hs[n])) @ r[n], atol=1e-10)
    np.testing.assert_allclose(CE.value(f, y), optax.softmax_cross_entropy(f, y).mean(),
                               rtol=1e-14)
    # residual = N * gradient of the loss
    np.testing.assert_allclose(ce.ce_residual(f, y), 5 * jax.grad(CE.value)(f, y), atol=1e-14)
    assert float(CE.accuracy(y + 0.1 * f, y)) == 1.0


# ------------------------------------------------------------------ the generic integrator
@pytest.mark.parametrize("method", ["gd", "exact", "block_diagonal"])
def test_flow_with_mse_residual_matches_closed_form(setup, method):
    """Same integrator on the linear flow (an MSE Operator) == ntkngd.predict's closed form."""
    K, f0, f0t = setup["K"], setup["f0"], setup["f0t"]
    y = setup["y"] - 0.3
    op = ng.operator(method, K)
    times = np.array([0.0, 0.3, 1.0, 2.5])
    ref = ng.predict(op, f0, y, f0t, lr=0.7, times=times, continuous=True)
    t, tr, te, _ = integrate_flow(op, f0, y, f0t, lr=0.7, times=times, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(tr, ref.train, atol=1e-8, rtol=0)
    np.testing.assert_allclose(te, ref.test, atol=1e-8, rtol=0)
    # discrete map, same generic code path
    _, tr_d, te_d = iterate_steps(op, f0, y, f0t, lr=0.1, steps=[0, 1, 5])
    ref_d = ng.predict(op, f0, y, f0t, lr=0.1, steps=[0, 1, 5])
    np.testing.assert_allclose(tr_d, ref_d.train, atol=1e-10)
    np.testing.assert_allclose(te_d, ref_d.test, atol=1e-10)


# ------------------------------------------------------------------ exact NGD
def test_exact_ngd_flow_against_fine_euler_steps(setup):
    """Discrete map with step h = lr/k at k*tau steps is forward Euler for the flow at tau: its
    error is first order, e(h) ~ c h. Check e(h) shrinks like h (ratio ~2 on halving) and that
    the Richardson combination 2 D(h/2) - D(h) agrees to O(h^2)."""
    K, f0, f0t, y = setup["K"], setup["f0"], setup["f0t"], setup["y"]
    taus = np.array([0.0, 0.5, 1.0, 2.0])
    flow = ce.ce_predict("exact", K, f0, y, f0t, lr=1.0, times=taus, rtol=1e-12, atol=1e-12)
    outs = []
    for k in (500, 1000):
        d = ce.ce_predict("exact", K, f0, y, f0t, lr=1.0 / k, steps=(taus * k).astype(int))
        outs.append((d.train, d.test))
    e1 = np.abs(outs[0][0] - flow.train).max()
    e2 = np.abs(outs[1][0] - flow.train).max()
    assert e2 < 2e-3 and 1.8 < e1 / e2 < 2.2
    rich_tr = 2 * outs[1][0] - outs[0][0]
    rich_te = 2 * outs[1][1] - outs[0][1]
    assert np.abs(rich_tr - flow.train).max() < 1e-5
    assert np.abs(rich_te - flow.test).max() < 1e-5
    assert np.all(np.diff(flow.train_loss) < 0)


def test_exact_ngd_operator_is_hs_pinv_and_damped_limit(setup):
    """rho = 0: G r = Hs^+ r on training points (alpha = 1); damped solve -> that limit linearly."""
    K, f0, y = setup["K"], setup["f0"], setup["y"]
    f = jnp.asarray(f0)
    r = ce.ce_residual(f, y)
    p = np.asarray(jax.nn.softmax(f))
    g0, gt0 = ce.ce_operator("exact", K, 0.0)(f, r)
    for n in range(N):
        hs = np.diag(p[n]) - np.outer(p[n], p[n])
        np.testing.assert_allclose(g0[n], np.linalg.pinv(hs) @ np.asarray(r[n]), atol=1e-10)
    errs = []
    for rho in (1e-6, 1e-7):
        g, gt = ce.ce_operator("exact", K, rho)(f, r)
        errs.append(max(np.abs(g - g0).max(), np.abs(gt - gt0).max()))
    assert errs[1] < 1e-3 and 7 < errs[0] / errs[1] < 13


def test_gd_matches_neural_tangents_ode(setup):
    K, f0, f0t, y = setup["K"], setup["f0"], setup["f0t"], setup["y"]
    times = np.array([0.5, 1.0, 3.0])
    lr = 0.8

    def loss(fx, y_hat):   # this module's normalisation: (1/N) sum -y log softmax
        return -jnp.sum(y_hat * jax.nn.log_softmax(fx)) / fx.shape[0]

    predict = nt.predict.gradient_descent(loss, K.ntk_train, jnp.asarray(y), lr, momentum=None,
                                          trace_axes=(-1,))
    ref_tr, ref_te = predict(times, f0, f0t, K.ntk_test)
    ours = ce.ce_predict("gd", K, f0, y, f0t, lr=lr, times=times, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(ours.train, ref_tr, atol=1e-6)
    np.testing.assert_allclose(ours.test, ref_te, atol=1e-6)


# ------------------------------------------------------------------ block patterns
def test_block_patterns_are_alpha_times_exact_flow(setup):
    """Theta_l invertible, rho -> 0: pattern flow at tau == exact NGD flow at alpha tau."""
    K, f0, f0t, y = setup["K"], setup["f0"], setup["f0t"], setup["y"]
    taus = np.array([0.0, 0.2, 0.5, 1.0])
    kw = dict(rtol=1e-11, atol=1e-12)
    bd = ce.ce_predict("bd", K, f0, y, f0t, lr=1.0, times=taus, **kw)
    assert bd.alpha == L
    ex = ce.ce_predict("exact", K, f0, y, f0t, lr=1.0, times=L * taus, **kw)
    np.testing.assert_allclose(bd.train, ex.train, atol=1e-8)
    np.testing.assert_allclose(bd.train_loss, ex.train_loss, atol=1e-9)
    # the damped (L N C) dual system approaches the same flow as rho -> 0
    bd_damped = ce.ce_predict("bd", K, f0, y, f0t, lr=1.0, times=taus, damping=1e-8, **kw)
    np.testing.assert_allclose(bd_damped.train, ex.train, atol=1e-4)
    # a generic pattern: S with layers 1, 2 coupled (alpha = 1^T S^+ 1 = 2)
    S = ng.block_pattern([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert ng.pattern_alpha(S.matrix) == pytest.approx(2.0)
    gen = ce.ce_predict(S, K, f0, y, f0t, lr=1.0, times=taus, **kw)
    ex2 = ce.ce_predict("exact", K, f0, y, f0t, lr=1.0, times=2 * taus, **kw)
    np.testing.assert_allclose(gen.train, ex2.train, atol=1e-8)


def test_damped_patterns_match_parameter_space_fisher():
    """Push-through check on explicit Jacobians (finite width, kron_outputs=False):
    Delta f = -lr J (F_S + rho I)^{-1} J^T (p - y)/N with F_S = Jb^T (S (x) Hs) Jb / N."""
    rs = np.random.RandomState(3)
    n, nt_, c, widths, rho = 4, 3, 3, (7, 9, 5), 1e-2
    Js = [rs.randn(n * c, w) for w in widths]
    Jts = [rs.randn(nt_ * c, w) for w in widths]
    net = ng.mlp(3, 8, out_dim=c)
    K = ng.Kernels(blocks_train=np.stack([j @ j.T for j in Js]),
                   fwd_train=np.zeros((3, n, n)), bwd_train=np.zeros((3, n * c, n * c)),
                   out_dim=c, kron_outputs=False, network=net,
                   blocks_test=np.stack([jt @ j.T for jt, j in zip(Jts, Js)]),
                   fwd_test=np.zeros((3, nt_, n)))
    f = rs.randn(n, c)
    y = np.eye(c)[rs.randint(0, c, n)]
    p = np.asarray(jax.nn.softmax(f))
    r = p - y
    hs = np.zeros((n * c, n * c))
    for i in range(n):
        hs[i * c:(i + 1) * c, i * c:(i + 1) * c] = np.diag(p[i]) - np.outer(p[i], p[i])
    J, Jt = np.hstack(Js), np.hstack(Jts)
    off = np.cumsum((0,) + widths)
    cases = {"exact": np.ones((3, 3)), "bd": np.eye(3),
             "btd": ng.tridiagonal_pattern(3).matrix,
             "custom": np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1.0]])}
    for name, S in cases.items():
        F = np.zeros((off[-1], off[-1]))
        for a in range(3):
            for b in range(3):
                F[off[a]:off[a + 1], off[b]:off[b + 1]] = S[a, b] * Js[a].T @ hs @ Js[b] / n
        dtheta = np.linalg.solve(F + rho * np.eye(off[-1]), J.T @ r.reshape(-1) / n)
        method = ng.block_pattern(S) if name == "custom" else name
        op = ce.ce_operator(method, K, rho)
        g, gt = op(jnp.asarray(f), jnp.asarray(r))
        np.testing.assert_allclose(np.asarray(g).reshape(-1), J @ dtheta, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.asarray(gt).reshape(-1), Jt @ dtheta, rtol=1e-8, atol=1e-10)
    g, gt = ce.ce_operator("gd", K)(jnp.asarray(f), jnp.asarray(r))
    np.testing.assert_allclose(np.asarray(g).reshape(-1), J @ J.T @ r.reshape(-1) / n, atol=1e-10)
    with pytest.raises(ValueError, match="damping > 0"):
        ce.ce_operator("exact", K, 0.0)


def test_discrete_map_one_step(setup):
    K, f0, f0t, y = setup["K"], setup["f0"], setup["f0t"], setup["y"]
    out = ce.ce_predict("bd", K, f0, y, f0t, y_test=setup["yt"], lr=0.25, steps=2)
    f = f0.copy()
    for _ in range(2):
        p = np.asarray(jax.nn.softmax(f))
        x = np.stack([np.linalg.pinv(np.diag(q) - np.outer(q, q)) @ (q - t)
                      for q, t in zip(p, y)])
        f = f - 0.25 * L * x
    np.testing.assert_allclose(out.train[-1], f, atol=1e-9)
    assert out.t.tolist() == [0, 1, 2] and not out.continuous
    assert out.test_loss.shape == (3,) and out.test_accuracy.shape == (3,)
    mse = ng.predict(ng.operator("bd", K), f0, y, f0t, y_test=setup["yt"], steps=2)
    assert type(out) is type(mse) is ng.Trajectory is ng.CETrajectory      # one type, every loss
    assert mse.test_accuracy.shape == (3,) and out.alpha == mse.alpha == L
    assert out.train_loss[2] < out.train_loss[0]


# ------------------------------------------------------------------ validation
def test_bad_labels_and_unsupported_methods(setup):
    K, f0, y = setup["K"], setup["f0"], setup["y"]
    kw = dict(steps=1)
    with pytest.raises(ValueError, match="not one-hot"):
        ce.ce_predict("exact", K, f0, y * 0.5, **kw)
    soft = y.copy()
    soft[0] = [1, 1, 0]
    with pytest.raises(ValueError, match="not one-hot"):
        ce.ce_predict("exact", K, f0, soft, **kw)
    with pytest.raises(ValueError, match="wrong class count"):
        ce.ce_predict("exact", K, f0, np.eye(4)[:N], **kw)
    bad = y.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ce.ce_predict("exact", K, f0, bad, **kw)
    with pytest.raises(ValueError, match="one_hot"):
        ce.ce_predict("exact", K, f0, np.argmax(y, 1), **kw)
    with pytest.raises(ValueError, match="points"):
        ce.ce_predict("exact", K, f0, y[:-1], **kw)
    K1 = K.replace(out_dim=1)     # a one-output network: no softmax
    with pytest.raises(ValueError, match="C >= 2"):
        ce.ce_predict("exact", K1, np.zeros((N, 1)), np.ones((N, 1)), **kw)
    with pytest.raises(ValueError, match="C >= 2"):
        CE.validate(np.ones((N, 1)), "y", N, 1)
    for m in ("kfac", "unit_wise"):
        with pytest.raises(NotImplementedError, match="cross-entropy"):
            ce.ce_operator(m, K)
    with pytest.raises(ValueError, match="exactly one"):
        ce.ce_predict("exact", K, f0, y)
