"""Finite-width cross-entropy directions and training (ntkngd.train with loss="ce"; the v0.1 names
from ntkngd.compat)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import compat as ce  # noqa: E402
from ntkngd import compat as E  # noqa: E402
from ntkngd.training import observers  # noqa: E402
from ntkngd.networks import empirical  # noqa: E402

N, NT, D, C, L = 6, 4, 10, 3, 3
PATTERN = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1.]])     # singular, 1 in its range, alpha 2


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _problem(width, seed=0):
    rs = np.random.RandomState(seed)
    x = _unit(rs.randn(N + NT, D))
    y = np.eye(C)[rs.randint(0, C, N + NT)]
    net = ng.mlp(L, width, "relu", b_std=0.1, out_dim=C)
    params = net.init_fn(jax.random.PRNGKey(seed), (-1, D))[1]
    return net, params, (x[:N], y[:N], x[N:], y[N:])


@pytest.fixture(scope="module")
def small():
    net, params, data = _problem(16)
    K, f = empirical.kernels_and_outputs(net, params, data[0])
    return dict(net=net, params=params, data=data, K=K, f=np.asarray(f))


def _jvp(net, params, x, d):
    """J d by forward-mode autodiff of the network (independent of the kernels)."""
    d = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                     jax.tree_util.tree_leaves(d))
    return np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1])


METHODS = ["gd", "exact", "block_diagonal", "block_tridiagonal", ng.block_pattern(PATTERN)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: getattr(m, "name", m))
def test_damped_step_pushed_through_jacobian_is_function_space_step(small, method):
    """rho > 0: J d (jax.jvp) == G_CE r from ce_operator on the empirical kernels, to round-off."""
    net, params, (x, y, _, _) = small["net"], small["params"], small["data"]
    f, K = small["f"], small["K"]
    r = np.asarray(ce.ce_residual(f, y))
    for rho in (1e-2, 1e-4):
        jd = _jvp(net, params, x, E.ce_direction(method, net, params, x, y, rho))
        ref = np.asarray(ce.ce_operator(method, K, rho)(f, r)[0])
        np.testing.assert_allclose(jd, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
        lin = observers.method_step(method, K, rho, f, y)
        np.testing.assert_allclose(lin, jd, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("method", METHODS[1:], ids=lambda m: getattr(m, "name", m))
def test_min_norm_limit_is_alpha_hs_pinv_and_damped_limit(small, method):
    """rho = 0 (minimum-norm limit): J d == ce_min_norm_operator, == alpha Hs^+ r up to a
    per-sample logit shift, and the damped step tends to it linearly in rho."""
    net, params, (x, y, _, _) = small["net"], small["params"], small["data"]
    f, K = small["f"], small["K"]
    r = np.asarray(ce.ce_residual(f, y))
    jd = _jvp(net, params, x, E.ce_direction(method, net, params, x, y, 0.0))
    op = ce.ce_min_norm_operator(method, K)
    np.testing.assert_allclose(jd, np.asarray(op(f, r)[0]), atol=1e-10 * np.abs(jd).max())
    alpha = observers.reference_alpha(method, net, N)
    assert alpha == pytest.approx(op.alpha, rel=1e-12)
    iso = observers.isotropy_fit(jd, f, y, alpha)
    assert iso["deviation_ref"] < 1e-10 and abs(iso["alpha_fit"] - alpha) < 1e-9 * alpha
    x_pinv = np.asarray(ng.losses.softmax_cross_entropy.pinv_apply(jnp.asarray(f), jnp.asarray(r)))
    shift = jd - alpha * x_pinv
    np.testing.assert_allclose(shift, shift.mean(1, keepdims=True) * np.ones(C), atol=1e-9)
    errs = [np.abs(_jvp(net, params, x, E.ce_direction(method, net, params, x, y, rho)) - jd)
            .max() for rho in (1e-7, 1e-8)]
    assert errs[1] < 1e-3 * np.abs(jd).max() and 7 < errs[0] / errs[1] < 13


def _augmented_grad(net, params, x, y):
    """Gradient of the CE loss w.r.t. each augmented weight [W_l; b_l] (autodiff)."""
    g = jax.grad(lambda p: ng.losses.softmax_cross_entropy.value(net.apply_fn(p, x), y))(params)
    return [np.concatenate([np.asarray(W), np.asarray(b).reshape(1, -1)], 0)
            for W, b in g[::2]]


def _augmented(d):
    return [np.concatenate([np.asarray(W), np.asarray(b).reshape(1, -1)], 0) for W, b in d[::2]]


def _hs(p):
    return np.einsum("nc,cd->ncd", p, np.eye(C)) - p[:, :, None] * p[:, None, :]


def test_kfac_matches_brute_force_kronecker_factors(small):
    """d_l = (A + lam)^{-1} grad_l (B + lam)^{-1}, A = Ht^T Ht / N, B = sum_n D_n^T Hs_n D_n / N,
    lam = sqrt(rho), formed explicitly in parameter space."""
    net, params, (x, y, _, _) = small["net"], small["params"], small["data"]
    K, f = small["K"], small["f"]
    hs = _hs(np.asarray(jax.nn.softmax(f)))
    grads = _augmented_grad(net, params, x, y)
    for rho in (1e-3, 1e-6):
        lam = np.sqrt(rho)
        got = _augmented(E.ce_direction("kfac", net, params, x, y, rho))
        for l in range(L):
            ht = np.asarray(K.layer_inputs_train[l])[:, 0]
            d = np.asarray(K.backprops_train[l])[:, 0].reshape(N, C, -1)
            A = ht.T @ ht / N
            B = np.einsum("ncm,ncd,ndk->mk", d, hs, d) / N
            want = np.linalg.solve(A + lam * np.eye(len(A)), grads[l]) @ \
                np.linalg.inv(B + lam * np.eye(len(B)))
            np.testing.assert_allclose(got[l], want, rtol=0, atol=1e-7 * np.abs(want).max())


def test_unit_wise_matches_brute_force_unit_blocks(small):
    """Per unit i of layer l: (J_li^T Hs J_li / N + rho I)^{-1} grad_li, formed explicitly."""
    net, params, (x, y, _, _) = small["net"], small["params"], small["data"]
    K, f = small["K"], small["f"]
    hs = _hs(np.asarray(jax.nn.softmax(f)))
    hs_full = np.zeros((N * C, N * C))
    for n in range(N):
        hs_full[n * C:(n + 1) * C, n * C:(n + 1) * C] = hs[n]
    grads = _augmented_grad(net, params, x, y)
    rho = 1e-4
    got = _augmented(E.ce_direction("unit_wise", net, params, x, y, rho))
    for l in range(L):
        ht = np.asarray(K.layer_inputs_train[l])[:, 0]
        d = np.asarray(K.backprops_train[l])[:, 0]
        for i in range(d.shape[1]):
            J = np.repeat(ht, C, 0) * d[:, i:i + 1]                 # rows (n, c): Ht[n] D[(n,c),i]
            F = J.T @ hs_full @ J / N + rho * np.eye(J.shape[1])
            want = np.linalg.solve(F, grads[l][:, i])
            np.testing.assert_allclose(got[l][:, i], want, rtol=0,
                                       atol=1e-8 * max(np.abs(want).max(), 1e-12))


def test_unit_wise_needs_damping(small):
    net, params, (x, y, _, _) = small["net"], small["params"], small["data"]
    with pytest.raises(ValueError, match="damping > 0"):
        E.ce_direction("unit_wise", net, params, x, y, 0.0)


def test_train_ce_exact_decreases_and_follows_prediction():
    """Exact NGD (lr = 0.5): losses fall every step. First-step loss vs the empirical-kernel
    prediction: the linearization error shrinks ~ 1/sqrt(width) (measured 0.27 at width 64,
    0.10 at 512, 0.05 at 2048 on this problem), so we require < 0.08 at width 2048 and a fall by
    more than 3x from width 64."""
    errs = {}
    for width in (64, 2048):
        net, params, data = _problem(width)
        log = E.train_ce("exact", net, params, data, steps=3)
        assert np.all(np.diff(log.train_loss) < 0)
        assert log.lr == pytest.approx(0.5) and log.damping == 0.0
        np.testing.assert_allclose(log.pred_emp_train_loss, log.pred_inf_train_loss, rtol=1e-6)
        assert np.all(log.deviation < 1e-10)
        errs[width] = log.rel_error("emp")[1]
        assert "pred emp" in log.table()
    assert errs[2048] < 0.08 and errs[2048] < errs[64] / 3


@pytest.mark.parametrize("method", ["kfac", "unit_wise"])
def test_kfac_unit_wise_report_finite_deviation(method):
    net, params, data = _problem(512)
    log = E.train_ce(method, net, params, data, steps=2)
    assert np.all(np.isfinite(log.deviation)) and np.all(log.deviation >= 0)
    # the derived constant (docs/theory.md) sets the lr; the fit measures it
    assert np.all(np.isfinite(log.alpha_fit)) and log.pred_alpha == log.alpha
    assert log.lr == pytest.approx(0.5 / log.alpha)
    assert np.all(np.isnan(log.pred_emp_test_loss)) and np.all(np.isfinite(log.train_loss))
    assert log.train_loss[-1] < log.train_loss[0]
    assert "no function-space theory" in log.table()
    if method == "kfac":    # literal K-FAC: alpha close to N (L - 1) + 1 for CE too (measured)
        assert abs(log.alpha_fit[0] / (N * (L - 1) + 1) - 1) < 0.1


def test_bad_labels_raise(small):
    net, params, (x, y, xt, yt) = small["net"], small["params"], small["data"]
    soft = y * 0.9 + 0.1 / C
    with pytest.raises(ValueError, match="not one-hot"):
        E.ce_direction("exact", net, params, x, soft)
    with pytest.raises(ValueError, match="class count"):
        E.ce_direction("exact", net, params, x, np.eye(C + 1)[np.argmax(y, 1)])
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        E.train_ce("exact", net, params, (x, bad, xt, yt), steps=1)
    with pytest.raises(ValueError, match="not one-hot"):
        E.train_ce("exact", net, params, (x, y, xt, 2 * yt), steps=1)
    with pytest.raises(ValueError, match="C >= 2"):
        net1 = ng.mlp(L, 16, "relu", b_std=0.1, out_dim=1)
        p1 = net1.init_fn(jax.random.PRNGKey(0), (-1, D))[1]
        E.ce_direction("exact", net1, p1, x, y[:, :1])
