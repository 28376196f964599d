"""Function-space dynamics: closed forms against step-by-step iteration and neural-tangents."""
import neural_tangents as nt
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points


@pytest.fixture(scope="module")
def setup():
    rng = np.random.RandomState(0)
    x, xt = sphere_points(10, 6, 0), sphere_points(4, 6, 1)   # d < N: K-FAC anisotropic
    net = ng.mlp(5, 32, "relu", b_std=0.1, out_dim=2)
    K = ng.analytic_kernels(net, x, xt)
    y = np.eye(2)[rng.randint(0, 2, 10)] - 0.5
    f0, f0t = 0.3 * rng.randn(10, 2), 0.3 * rng.randn(4, 2)
    return K, y, f0, f0t


def iterate(op, f0, y, f0t, lr, steps):
    f, ft, out = f0.copy(), f0t.copy(), []
    for _ in range(steps + 1):
        out.append((f.copy(), ft.copy()))
        r = f - y
        f, ft = f - lr * op.train @ r, ft - lr * op.test @ r
    return out


@pytest.mark.parametrize("method,damping", [("gd", 0.0), ("kfac", 0.0), ("btd", 1e-3),
                                            ("exact", 0.0), ("bd", 1e-2)])
def test_discrete_closed_form_matches_iteration(setup, method, damping):
    K, y, f0, f0t = setup
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op = ng.operator(method, K, damping=damping)
    lr = 0.7 * op.lr
    traj = ng.predict(op, f0, y, f0t, lr=lr, steps=12, y_test=np.zeros((4, 2)))
    ref = iterate(op, f0, y, f0t, lr, 12)
    for t, (f, ft) in enumerate(ref):
        np.testing.assert_allclose(traj.train[t], f, atol=1e-10)
        np.testing.assert_allclose(traj.test[t], ft, atol=1e-9)
    np.testing.assert_allclose(traj.train_loss, [ng.losses.mse.value(f, y) for f, _ in ref],
                               rtol=1e-9)
    assert traj.test_loss.shape == (13,)


def test_gd_agrees_with_neural_tangents(setup):
    K, y, f0, f0t = setup
    op = ng.operator("gd", K)
    times = np.array([0.0, 0.5, 3.0, 40.0])
    eta = 2.0
    # neural-tangents: df/dt = -eta Theta (f - y) / (N C); here: -lr Theta (f - y) / N -> lr = eta / C
    traj = ng.predict(op, f0, y, f0t, lr=eta / 2, times=times)
    fn = nt.predict.gradient_descent_mse(np.asarray(K.ntk_train), y, learning_rate=eta)
    a, b = fn(times, f0, f0t, np.asarray(K.ntk_test))
    np.testing.assert_allclose(traj.train, a, atol=1e-10)
    np.testing.assert_allclose(traj.test, b, atol=1e-10)


def test_isotropic_flow_and_one_direction_on_test(setup):
    K, y, f0, f0t = setup
    op = ng.operator("bd", K)      # alpha = L = 5
    tau = np.array([0.0, 0.1, 1.0, 2.5])
    lr = 0.4
    traj = ng.predict(op, f0, y, f0t, lr=lr, times=tau)
    r0 = f0 - y
    for k, t in enumerate(tau):
        np.testing.assert_allclose(traj.train[k] - y, np.exp(-lr * 5 * t) * r0, atol=1e-12)
        step = (1 - np.exp(-lr * 5 * t)) / 5
        np.testing.assert_allclose(traj.test[k], f0t - step * op.test @ r0, atol=1e-12)
    one = ng.predict(op, f0, y, f0t, steps=1)
    assert one.lr == pytest.approx(0.2) and one.train_loss[1] < 1e-25


def test_diagonal_operator_flow_and_steps(setup):
    """K-FAC with d < N has G = diag(...) exactly (the first layer's N diag(P_X)): predict's
    sample-by-sample path against the matrix exponential and against the dense operator (the
    same G with one off-diagonal round-off entry, which takes the eigendecomposition path)."""
    from scipy.linalg import expm
    K, y, f0, f0t = setup
    with pytest.warns(ng.TheoryConditionWarning, match="rank"):
        op = ng.operator("kfac", K)
    assert op.is_diagonal and op.deviation > 1e-3
    g = op.train
    assert op.spectrum[0] == pytest.approx(np.diagonal(g).max(), rel=1e-15)
    assert op.lr == pytest.approx(1 / np.diagonal(g).max(), rel=1e-15)
    tau, lr = np.array([0.0, 0.3, 2.0]), 0.3
    traj = ng.predict(op, f0, y, f0t, lr=lr, times=tau)
    for k, t in enumerate(tau):
        e = expm(-lr * t * g)
        np.testing.assert_allclose(traj.train[k] - y, e @ (f0 - y), atol=1e-12)
        integral = np.linalg.solve(g, np.eye(10) - e)        # int_0^t lr e^{-lr G s} ds
        np.testing.assert_allclose(traj.test[k], f0t - op.test @ integral @ (f0 - y), atol=1e-12)
    bumped = g.copy()
    bumped[0, 1] = bumped[1, 0] = 1e-300
    dense = op.replace(train=bumped)
    assert not dense.is_diagonal
    for kw in (dict(times=tau), dict(steps=30)):
        a = ng.predict(op, f0, y, f0t, lr=lr, **kw)
        b = ng.predict(dense, f0, y, f0t, lr=lr, **kw)
        np.testing.assert_allclose(a.train, b.train, atol=1e-12)
        np.testing.assert_allclose(a.test, b.test, atol=1e-12)


def test_is_diagonal_reads_every_off_diagonal_entry():
    from ntkngd.dynamics.linear import is_diagonal
    rng = np.random.RandomState(3)
    for m in (1, 2, 5):
        d = np.diag(rng.rand(m))
        assert is_diagonal(d)
        for i in range(m):
            for j in range(m):
                if i != j:
                    e = d.copy()
                    e[i, j] = 1e-300
                    assert not is_diagonal(e)
        assert is_diagonal(np.asfortranarray(d))


def test_predict_bad_input(setup):
    K, y, f0, f0t = setup
    op = ng.operator("exact", K)
    with pytest.raises(ValueError, match="lr must be a positive"):
        ng.predict(op, f0, y, steps=3, lr=0.0)
    with pytest.raises(ValueError, match="lr must be a positive"):
        ng.predict(op, f0, y, steps=3, lr=-1.0)
    with pytest.raises(ValueError, match=r"f0_train must have shape \(10, 2\)"):
        ng.predict(op, f0[:5], y, steps=3)
    with pytest.raises(ValueError, match="NaN"):
        ng.predict(op, np.full_like(f0, np.nan), y, steps=3)
    with pytest.raises(ValueError, match="exactly one of steps"):
        ng.predict(op, f0, y)
    with pytest.raises(ValueError, match="integers"):
        ng.predict(op, f0, y, steps=[0.5])
    with pytest.warns(ng.TheoryConditionWarning, match="first-layer input Gram is singular"):
        uw = ng.operator("unit_wise", K)       # these kernels have N > d
    with pytest.raises(ValueError, match="no test operator"):
        ng.predict(uw, f0, y, f0t, steps=2)


# ------------------------------------------------------------------ t -> infinity
@pytest.mark.parametrize("method", ["gd", "exact"])
def test_infinite_time_is_the_long_time_limit(setup, method):
    """times=[T, inf] with exp(-lr lambda_min T) = e^-60: the two points agree to the round-off of
    the two evaluations (eigendecomposition, Schur + Sylvester): eps kappa(G) relative, with a
    factor 100 for the m-term sums and the test products."""
    K, y, f0, f0t = setup
    op = ng.operator(method, K)
    lam = op.spectrum
    kappa = lam[0] / lam[-1]
    assert lam[-1] > 0 and kappa < 1e6                     # well conditioned
    T = 60.0 / lam[-1]
    traj = ng.predict(op, f0, y, f0t, lr=1.0, times=[0.0, T, np.inf], y_test=np.zeros((4, 2)))
    assert traj.t[-1] == np.inf and traj.continuous
    tol = 100 * np.finfo(float).eps * kappa
    scale = np.abs(f0 - y).max()
    np.testing.assert_allclose(traj.train[2], traj.train[1], rtol=0, atol=tol * scale)
    gain = np.abs(np.asarray(op.test)).sum(1).max() / lam[-1]      # ||G' G^-1|| bound
    np.testing.assert_allclose(traj.test[2], traj.test[1], rtol=0, atol=tol * scale * gain)
    np.testing.assert_allclose(traj.train[2], y, rtol=0, atol=tol * scale)   # G invertible
    assert traj.test_loss[2] == pytest.approx(traj.test_loss[1], rel=1e-9)


def test_infinite_time_on_a_singular_kernel_is_the_min_norm_solution():
    """GD on a kernel with a repeated training input (Theta singular, rank N - 1) and conflicting
    targets there: f_inf = y + (I - Theta Theta^+) g, f'_inf = f'_0 - Theta' Theta^+ g (the
    minimum-norm solution: Theta^+ with numpy's pinv), to eps x kappa of the retained modes."""
    x = sphere_points(7, 6, 0)
    x = np.concatenate([x, x[:1]])                          # point 0 twice
    xt = sphere_points(3, 6, 1)
    K = ng.analytic_kernels(ng.mlp(3, 32, "relu", b_std=0.1), x, xt)
    op = ng.operator("gd", K)
    theta, theta_t = np.asarray(K.ntk_train), np.asarray(K.ntk_test)
    w = np.linalg.eigvalsh(theta)
    assert w[0] < 1e-12 * w[-1] and w[1] > 1e-6 * w[-1]     # one null mode, the rest retained
    rng = np.random.RandomState(2)
    f0, y, f0t = rng.randn(8, 1), rng.randn(8, 1), rng.randn(3, 1)
    traj = ng.predict(op, f0, y, f0t, lr=1.0, times=[np.inf])
    pinv = np.linalg.pinv(theta, rcond=1e-10, hermitian=True)
    g = f0 - y
    tol = 100 * np.finfo(float).eps * w[-1] / w[1] * np.abs(g).max()
    np.testing.assert_allclose(traj.train[0], y + g - theta @ (pinv @ g), rtol=0, atol=tol)
    np.testing.assert_allclose(traj.test[0], f0t - theta_t @ (pinv @ g), rtol=0,
                               atol=tol * np.abs(theta_t).sum(1).max() / w[1] * w[-1])
    # the residual left is the conflict between the two copies of point 0: (g_0 - g_7) / 2 each
    res = traj.train[0] - y
    np.testing.assert_allclose(res[[0, 7], 0], [(g[0, 0] - g[7, 0]) / 2, (g[7, 0] - g[0, 0]) / 2],
                               rtol=0, atol=tol)


def test_infinite_time_is_refused_where_it_has_no_meaning(setup):
    K, y, f0, f0t = setup
    op = ng.operator("exact", K)
    with pytest.raises(ValueError, match="times must be"):
        ng.predict(op, f0, y, times=[0.0, np.nan])
    with pytest.raises(ValueError, match="sorted"):
        ng.predict(op, f0, y, times=[np.inf, 1.0])
    ce = ng.operator("exact", ng.analytic_kernels(ng.mlp(2, 16, out_dim=2), sphere_points(4, 3)),
                     loss="ce")
    with pytest.raises(ValueError, match="no fixed point"):
        ng.predict(ce, np.zeros((4, 2)), np.eye(2)[[0, 1, 0, 1]], times=[np.inf])
