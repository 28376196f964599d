"""Shortcuts through narrow factors against the plain computations they replace (float64):
K-FAC's Grams solved through their features (first-layer inputs, output-layer backprops) instead
of N x N factorizations, and unit-wise per-unit solves restricted to each unit's active samples."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points
from ntkngd import engine
from ntkngd.networks import empirical
from ntkngd.losses import mse
from ntkngd.methods import kfac, unitwise


@pytest.mark.parametrize("b_std", [0.0, 0.3])
def test_first_inputs_factor_the_first_layer_gram(b_std):
    x, xt = sphere_points(50, 7, 0), sphere_points(9, 7, 1)
    K = ng.analytic_kernels(ng.mlp(3, 64, "relu", W_std=1.3, b_std=b_std), x, xt)
    F, Ft = np.asarray(K.first_inputs_train), np.asarray(K.first_inputs_test)
    assert F.shape == (50, 7 + (b_std > 0))
    scale = np.abs(np.asarray(K.fwd_train[0])).max()
    np.testing.assert_allclose(F @ F.T, K.fwd_train[0], rtol=0, atol=1e-14 * scale)
    np.testing.assert_allclose(Ft @ F.T, K.fwd_test[0], rtol=0, atol=1e-14 * scale)


def _without_features(K):
    return K.replace(first_inputs_train=None, first_inputs_test=None, layer_inputs_train=None,
                     layer_inputs_test=None, backprops_train=None, backprops_test=None)


def _operators(K, damping):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        return ng.operator("kfac", K, damping), ng.operator("kfac", _without_features(K), damping)


def _close(a, b, rel):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * np.abs(b).max())


@pytest.mark.parametrize("damping", [0.0, 1e-4])
def test_kfac_feature_route_equals_the_gram_route_at_infinite_width(damping):
    """N = 120 > d + 1 = 11: the first-layer Gram is singular; through its (d+1)-column features
    or through an N x N eigendecomposition (damped: Cholesky), the same operator."""
    x, xt = sphere_points(120, 10, 2), sphere_points(30, 10, 3)
    K = ng.analytic_kernels(ng.mlp(3, 64, "relu", b_std=0.2), x, xt)
    op, ref = _operators(K, damping)
    _close(op.train, ref.train, 1e-11)
    _close(np.asarray(op.test), np.asarray(ref.test), 1e-11)
    assert op.conditions == ref.conditions
    assert op.conditions["N <= d (first-layer input Gram invertible)"] is (damping > 0)


@pytest.mark.parametrize("out_dim,damping", [(1, 0.0), (3, 0.0), (3, 1e-3)])
def test_kfac_feature_route_equals_the_gram_route_at_finite_width(out_dim, damping):
    """Finite width, N = 30 > d + 1 = 9 and C = 3 (the output layer's backward Gram 1 1^T (x) I_C
    has rank C < N C): features Ht_1 and D_L against N x N (N C x N C) factorizations."""
    net = ng.mlp(3, 48, "relu", b_std=0.1, out_dim=out_dim)
    params = net.init_fn(jax.random.PRNGKey(0), (-1, 8))[1]
    K = ng.empirical_kernels(net, params, sphere_points(30, 8, 4), sphere_points(7, 8, 5))
    op, ref = _operators(K, damping)
    _close(op.train, ref.train, 1e-11)
    _close(np.asarray(op.test), np.asarray(ref.test), 1e-11)
    assert op.conditions == ref.conditions


def _pinv_signals(K, g):
    """A_l = N Q_l^+ Pg G_l^+ D_l with every pseudo-inverse formed by numpy (MSE, undamped)."""
    n, c = K.n_train, K.out_dim
    pg_t = (g[:, :, None] * np.eye(n)[:, None, :]).reshape(n * c, n)
    out = []
    for q, b, d in zip(*(map(np.asarray, v) for v in (K.fwd_train, K.bwd_train,
                                                      K.backprops_train))):
        qp = np.linalg.pinv(q, rcond=1e-10, hermitian=True)
        bp = np.linalg.pinv(b, rcond=1e-10, hermitian=True)
        out.append(n * qp @ (bp @ pg_t).T @ d[:, 0])
    return out


@pytest.mark.parametrize("jit", [False, True])
def test_kfac_signals_through_features_equal_pseudo_inverses(jit):
    """The parameter-space K-FAC signals with a singular first-layer Gram (N > d + 1) and a rank-C
    output Gram, eager and under jit."""
    net = ng.mlp(3, 48, "relu", b_std=0.1, out_dim=3)
    params = net.init_fn(jax.random.PRNGKey(1), (-1, 8))[1]
    x = sphere_points(30, 8, 6)
    K = ng.empirical_kernels(net, params, x)
    g = np.random.RandomState(0).randn(30, 3)

    def run(params, x, g):
        f, hts, ds = net.features(params, x)
        return kfac.signals(empirical.from_features(net, hts, ds), 0.0, jnp.zeros_like(f), g,
                            mse)                      # MSE residual f - y = -g
    got = jax.jit(run)(params, x, g) if jit else run(params, jnp.asarray(x), g)
    for a, want in zip(got, _pinv_signals(K, -g)):
        _close(a[:, 0], want, 1e-9)


def _dense_units(q, h, a, shift):
    """Per unit i: sqrt(h_i) o (s I + diag(sqrt h_i) Q diag(sqrt h_i))^{-1} (a_i / sqrt(h_i))."""
    sh = np.sqrt(h)
    out = np.zeros((h.shape[1], h.shape[0]))
    for i in range(h.shape[0]):
        m = sh[i][:, None] * q * sh[i][None, :] + shift * np.eye(len(q))
        rhs = np.where(sh[i] > 0, a[i] / np.where(sh[i] > 0, sh[i], 1.0), 0.0)
        out[:, i] = sh[i] * np.linalg.solve(m, rhs)
    return out


@pytest.mark.parametrize("n", [64, 20])
def test_unit_wise_active_set_solves_equal_dense_solves(n, monkeypatch):
    """Units active on 0 to all of the N samples (dead units included), solved in sorted chunks
    at the smallest size holding each chunk's active sets (N = 64) or at full size (N = 20)."""
    rng = np.random.RandomState(3)
    monkeypatch.setattr(unitwise, "_UNIT_CHUNK", 16)
    k = 150
    frac = np.linspace(0.0, 1.0, k)[rng.permutation(k)]
    h = np.abs(rng.randn(k, n)) * (rng.rand(k, n) < frac[:, None])
    a = rng.randn(k, n) * (h > 0)
    z = rng.randn(n, 3 * n)
    q = z @ z.T / n
    assert len(unitwise._active_sizes(n)) == (8 if n >= unitwise._BUCKET_MIN_N else 1)
    got = jax.jit(unitwise._damped_units)(jnp.asarray(q), jnp.asarray(h), jnp.asarray(a), 1e-3)
    want = _dense_units(q, h, a, 1e-3)
    assert got.shape == (n, k)
    _close(got, want, 1e-11)


def test_unit_wise_direction_does_not_depend_on_the_active_set_shortcut(monkeypatch):
    """A whole unit-wise direction at N = 60 (size buckets; 3 of them here, to compile fewer
    branches: the 8 of the default are checked per unit above) equals the one solved at full
    size."""
    monkeypatch.setattr(unitwise, "_BUCKETS", 3)
    engine.jitted_direction.clear_cache()
    net = ng.mlp(3, 40, "relu", b_std=0.1)
    params = net.init_fn(jax.random.PRNGKey(2), (-1, 5))[1]
    x = sphere_points(60, 5, 7)
    y = np.sign(np.random.RandomState(1).randn(60, 1)) / 2
    got = ng.ngd_direction("unit_wise", net, params, x, y, damping=1e-4)
    monkeypatch.setattr(unitwise, "_BUCKET_MIN_N", 10 ** 9)
    engine.jitted_direction.clear_cache()    # retrace at full size (jax.clear_caches() would
    #                                          make every later test in this worker recompile)
    want = ng.ngd_direction("unit_wise", net, params, x, y, damping=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        _close(a, b, 1e-11)


def test_kfac_feature_route_cuts_the_same_rank_as_the_gram_route():
    """Features whose Gram has one eigenvalue 1e-13 below the largest, in a random direction (below
    the 1e-10 cut): both routes drop it (rank d - 1) and give the same projector."""
    rng = np.random.RandomState(8)
    n, d = 90, 12
    u, _ = np.linalg.qr(rng.randn(n, d))
    v, _ = np.linalg.qr(rng.randn(d, d))
    s = np.geomspace(1.0, 0.3, d)
    s[-1] = 3e-7                                        # eigenvalue s^2 ~ 1e-13 of H^T H
    ht = u @ np.diag(s) @ v.T
    ht_t = rng.randn(15, d) @ v @ np.diag(s) @ v.T       # test features in the same geometry
    part, test_part, rank = kfac._feature_terms(jnp.asarray(ht), jnp.asarray(ht_t), 0.0)
    ref, ref_test, ref_rank = kfac._factor_terms(jnp.asarray(ht @ ht.T), 0.0,
                                                 jnp.asarray(ht_t @ ht.T), True)
    assert rank == ref_rank == d - 1
    _close(part.matrix(np.float64), ref.matrix(np.float64), 1e-10)
    _close(test_part, ref_test, 1e-8)


@pytest.mark.parametrize("p", [1, 5, 128, 129, 300, 517])
def test_lower_triangular_inverse_is_the_inverse(p):
    """The blocked inverse (base blocks of 128 solved against I) against numpy's inverse, for
    sizes below, at and across the recursion's splits; a singular factor gives inf or NaN."""
    from ntkngd import linalg
    rng = np.random.RandomState(p)
    a = rng.randn(p, 2 * p)
    r = np.linalg.cholesky(a @ a.T / (2 * p) + 0.1 * np.eye(p))   # a Cholesky factor, cond <= ~60
    inv = np.asarray(linalg.lower_triangular_inverse(jnp.asarray(r)))
    assert np.array_equal(inv, np.tril(inv))
    np.testing.assert_allclose(inv @ r, np.eye(p), rtol=0, atol=1e-13)
    np.testing.assert_allclose(inv, np.linalg.inv(r), rtol=0, atol=1e-13 * np.abs(inv).max())
    r[p // 2, p // 2] = 0.0
    assert not np.all(np.isfinite(np.asarray(linalg.lower_triangular_inverse(jnp.asarray(r)))))


def test_kfac_reuses_the_block_methods_output_factor_bit_for_bit():
    """At infinite width Theta_L = Q_L (B_L = 1): after BD has factored the blocks, K-FAC takes
    the output layer's factor from the cache instead of factoring Q_L again; same bits."""
    from ntkngd.methods import _cache
    x, xt = sphere_points(40, 50, 4), sphere_points(9, 50, 5)   # N < d: isotropic
    net = ng.mlp(3, 64, "relu", b_std=0.1)
    alone = ng.operator("kfac", ng.analytic_kernels(net, x, xt))
    K = ng.analytic_kernels(net, x, xt)
    ng.operator("bd", K)
    assert _cache.peek(K, "chol_layers") is not None
    assert kfac._shared_factor(K, 2, jnp.asarray(K.fwd_train[2])) is not None
    assert kfac._shared_factor(K, 1, jnp.asarray(K.fwd_train[1])) is None
    after = ng.operator("kfac", K)
    assert np.array_equal(alone.train, after.train)
    assert np.array_equal(np.asarray(alone.test), np.asarray(after.test))
    assert alone.alpha_theory == after.alpha_theory == 2 * 40 + 1
