"""Empirical (finite-width) per-layer kernels against brute-force Jacobians and neural-tangents."""
from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd.networks import empirical  # noqa: E402
from ntkngd.networks.empirical import empirical_kernels  # noqa: E402

N, NT, D = 5, 3, 7
CASES = [  # depth, width, activation, b_std, out_dim
    (1, 8, "relu", 0.0, 1),
    (2, 16, "relu", 0.0, 1),
    (3, 12, "erf", 0.3, 2),
    (4, 8, "relu", 0.5, 3),
]


def _setup(depth, width, act, b_std, c, seed=0):
    net = ng.mlp(depth, width, act, W_std=1.5, b_std=b_std, out_dim=c)
    _, params = net.init_fn(jax.random.PRNGKey(seed), (-1, D))
    rng = np.random.default_rng(seed)
    return net, params, rng.standard_normal((N, D)), rng.standard_normal((NT, D))


def _jacobian_blocks(net, params, x1, x2):
    """Theta_l from full per-layer Jacobians (jacrev w.r.t. each layer's W and b)."""
    def jac(x):
        j = jax.jacrev(lambda p: net.apply_fn(p, x))(params)
        rows = x.shape[0] * net.out_dim
        return [jnp.concatenate([a.reshape(rows, -1) for a in jax.tree_util.tree_leaves(j[2 * l])], 1)
                for l in range(net.depth)]
    j1, j2 = jac(x1), jac(x2)
    return np.stack([a @ b.T for a, b in zip(j2, j1)])


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("case", CASES)
def test_blocks_match_brute_force_jacobians(case):
    net, params, x, xt = _setup(*case)
    K = empirical_kernels(net, params, x, xt)
    c = net.out_dim
    assert not K.kron_outputs and K.depth == net.depth and K.out_dim == c
    assert K.blocks_train.shape == (net.depth, N * c, N * c)
    assert K.blocks_test.shape == (net.depth, NT * c, N * c)
    assert K.fwd_train.shape == (net.depth, N, N) and K.fwd_test.shape == (net.depth, NT, N)
    assert _rel(K.blocks_train, _jacobian_blocks(net, params, x, x)) < 1e-10
    assert _rel(K.blocks_test, _jacobian_blocks(net, params, x, xt)) < 1e-10


@pytest.mark.parametrize("case", CASES[1:3])
def test_total_matches_neural_tangents(case):
    net, params, x, xt = _setup(*case)
    K = empirical_kernels(net, params, x, xt)
    c = net.out_dim
    ntk = nt.empirical_ntk_fn(net.apply_fn, trace_axes=(), vmap_axes=0)
    ref = np.asarray(ntk(x, None, params)).transpose(0, 2, 1, 3).reshape(N * c, N * c)
    ref_t = np.asarray(ntk(xt, x, params)).transpose(0, 2, 1, 3).reshape(NT * c, N * c)
    assert _rel(K.ntk_train, ref) < 1e-10
    assert _rel(K.ntk_test, ref_t) < 1e-10


def test_factors_are_consistent():
    net, params, x, xt = _setup(3, 12, "erf", 0.3, 2)
    K = empirical_kernels(net, params, x, xt)
    for l in range(net.depth):
        ht, d = np.asarray(K.layer_inputs_train[l]), np.asarray(K.backprops_train[l])
        assert ht.shape == (N, 1, (D if l == 0 else 12) + 1)     # one position: S = 1
        assert d.shape == (N * 2, 1, net.layer_widths[l])
        ht, d = ht[:, 0], d[:, 0]
        np.testing.assert_allclose(K.fwd_train[l], ht @ ht.T, rtol=1e-12)
        np.testing.assert_allclose(K.bwd_train[l], d @ d.T, rtol=1e-12)
        np.testing.assert_allclose(K.blocks_train[l], np.kron(ht @ ht.T, np.ones((2, 2))) * (d @ d.T),
                                   rtol=1e-12)
    # output layer: D_L rows are the output one-hots
    np.testing.assert_array_equal(K.backprops_train[-1][:, 0], np.tile(np.eye(2), (N, 1)))
    np.testing.assert_allclose(empirical.outputs(net, params, x), net.apply_fn(params, x),
                               rtol=1e-12, atol=1e-14)


def test_float32_params_give_float32_kernels():
    net, params, x, xt = _setup(2, 16, "relu", 0.1, 1)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    K32 = empirical_kernels(net, p32, x, xt)
    K64 = empirical_kernels(net, params, x, xt)
    assert K32.blocks_train.dtype == jnp.float32 and K64.blocks_train.dtype == jnp.float64
    assert _rel(K32.blocks_train, K64.blocks_train) < 1e-5


def test_empirical_kernels_feed_operators():
    net, params, x, xt = _setup(3, 12, "erf", 0.3, 2)
    K = empirical_kernels(net, params, x, xt)
    op = ng.operator("exact", K)
    assert op.train.shape == (N * 2, N * 2) and op.test.shape == (NT * 2, N * 2)
    np.testing.assert_allclose(op.train, np.eye(N * 2), atol=1e-9)


# ------------------------------------------------------------------ bad input
def test_bad_params_and_inputs():
    net, params, x, xt = _setup(2, 16, "relu", 0.0, 1)
    with pytest.raises(ValueError, match="stax layers"):
        empirical_kernels(net, params[:1], x)
    other = ng.mlp(2, 8, "relu", out_dim=1)
    with pytest.raises(ValueError, match="expected"):
        empirical_kernels(other, params, x)
    with pytest.raises(ValueError, match="features|expected"):
        empirical_kernels(net, params, x[:, :3])
    with pytest.raises(ValueError, match="bias"):
        empirical_kernels(ng.mlp(2, 16, "relu", b_std=0.1), params, x)
    _, pb = ng.mlp(2, 16, "relu", b_std=0.1).init_fn(jax.random.PRNGKey(0), (-1, D))
    with pytest.raises(ValueError, match="no bias"):
        empirical_kernels(net, pb, x)
    bad = [(params[0][0].at[0, 0].set(jnp.nan), None)] + list(params[1:])
    with pytest.raises(ValueError, match="NaN"):
        empirical_kernels(net, bad, x)
    with pytest.raises(ValueError, match="NaN"):
        empirical_kernels(net, params, np.where(np.eye(N, D) > 0, np.nan, x))
    with pytest.raises(ValueError, match="features"):
        empirical_kernels(net, params, x, xt[:, :2])
    with pytest.raises(ValueError, match="list"):
        empirical_kernels(net, {"W": 1}, x)
    with pytest.raises(TypeError, match="Network"):
        empirical_kernels("mlp", params, x)
