"""Undamped block patterns with a singular per-layer block: the rho -> 0 limit F_S^+ grad.

Finite width: a float64 MLP whose readout block is singular (N C above its parameter count),
against a brute-force pseudo-inverse of the pattern's Fisher F_S = Jb^T (S (x) H) Jb built from
full Jacobians. Infinite width: duplicated inputs make every analytic block singular; the
undamped operator must be the limit of the damped ones (linear in rho, Richardson-extrapolated).
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkngd as ng
from conftest import sphere_points

CUSTOM = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
PATTERNS = {"block_tridiagonal": np.eye(3) + np.eye(3, k=1) + np.eye(3, k=-1), "custom": CUSTOM}


def _method(name):
    return name if name != "custom" else ng.block_pattern(CUSTOM, "custom")


@pytest.fixture(scope="module")
def singular_readout():
    """mlp(3, 4): the readout has 4 parameters per output, N = 10 points -> Theta_3 has rank 4."""
    net = ng.mlp(3, 4)
    x = sphere_points(10, 6, seed=3)
    y = np.random.default_rng(4).normal(size=(10, 1))
    _, params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    return net, x, y, params


def _layer_columns(params):
    cols = []
    for i in range(0, len(params), 2):
        mark = [jax.tree_util.tree_map(jnp.zeros_like, p) for p in params]
        mark[i] = jax.tree_util.tree_map(jnp.ones_like, params[i])
        cols.append(np.asarray(ravel_pytree(mark)[0]) > 0)
    return cols


def _brute_force(net, params, x, y, S, loss):
    """F_S^+ grad from full Jacobians, F_S[k, l] = S_kl J_k^T H J_l, grad = J^T r (numpy pinv with
    the library's float64 relative cut 1e-10; F_S's non-zero spectrum is far above it)."""
    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacrev(lambda p: net.apply_fn(unravel(p), x).reshape(-1))(flat))
    f = net.apply_fn(params, x)
    r = np.asarray(loss.residual(f, y)).reshape(-1)
    h = np.asarray(loss.hessian(f))
    n, c = h.shape[:2]
    hb = np.zeros((n * c, n * c))
    for i in range(n):
        hb[i * c:(i + 1) * c, i * c:(i + 1) * c] = h[i]
    cols = _layer_columns(params)
    F = np.zeros((flat.size, flat.size))
    for a, ca in enumerate(cols):
        for b, cb in enumerate(cols):
            if S[a, b]:
                F[np.ix_(ca, cb)] = jac[:, ca].T @ hb @ jac[:, cb]
    return np.linalg.pinv(F, rcond=1e-10, hermitian=True) @ (jac.T @ r), flat, unravel


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_undamped_direction_is_the_pseudo_inverse_step(name, singular_readout):
    net, x, y, params = singular_readout
    K = ng.empirical_kernels(net, params, x)
    assert np.linalg.matrix_rank(np.asarray(K.blocks_train[2])) <= 4      # singular readout
    d_bf, flat, unravel = _brute_force(net, params, x, y, PATTERNS[name], ng.losses.mse)
    d = np.asarray(ravel_pytree(ng.ngd_direction(_method(name), net, params, x, y, 0.0))[0])
    # error ~ eps x cond(F_S) on its range (~1e4 here): 1e-9 leaves a wide margin
    assert np.linalg.norm(d - d_bf) < 1e-9 * np.linalg.norm(d_bf)
    # one step at lr = 1/alpha keeps what the true limit keeps (the old fallback: 0.735 vs 0.252)
    lr = 1.0 / ng.pattern_alpha(PATTERNS[name])

    def loss(p):
        return float(ng.losses.mse.value(np.asarray(net.apply_fn(unravel(p), x)), y))
    assert abs(loss(flat - lr * d) - loss(flat - lr * d_bf)) < 1e-9 * loss(flat - lr * d_bf)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_undamped_direction_with_a_loss_hessian(loss, singular_readout):
    """Other losses: with a singular block the limit depends on H, not only on H^+ r."""
    _, x, _, _ = singular_readout
    c = 3 if loss == "ce" else 1
    net = ng.mlp(3, 4, out_dim=c)
    rng = np.random.default_rng(5)
    y = np.eye(c)[rng.integers(0, c, 10)] if c > 1 else rng.integers(0, 2, (10, 1)).astype(float)
    _, params = net.init_fn(jax.random.PRNGKey(2), x.shape)
    L = ng.get_loss(loss)
    d_bf, _, _ = _brute_force(net, params, x, y, PATTERNS["block_tridiagonal"], L)
    d = ng.ngd_direction("block_tridiagonal", net, params, x, y, 0.0, loss=loss)
    d = np.asarray(ravel_pytree(d)[0])
    assert np.linalg.norm(d - d_bf) < 1e-9 * np.linalg.norm(d_bf)


def test_operator_warning_says_what_is_returned(singular_readout):
    net, x, y, params = singular_readout
    K = ng.empirical_kernels(net, params, x, x[:3])
    with pytest.warns(ng.TheoryConditionWarning, match=r"layer\(s\) \[.*3\].*minimum-norm step "
                                                        r"F_S\^\+ grad"):
        op = ng.operator("block_tridiagonal", K, 0.0)
    # G' on the first three training points, as test points, is their rows of G
    np.testing.assert_allclose(np.asarray(op.test), np.asarray(op.train)[:3],
                               atol=1e-9 * np.abs(np.asarray(op.train)).max())


@pytest.mark.parametrize("name,depth", [("block_tridiagonal", 5), ("custom", 3)])
def test_infinite_width_duplicated_inputs_is_the_damped_limit(name, depth):
    """The damped operators approach the rho -> 0 one linearly: D(rho) = D0 + rho D1 + O(rho^2).
    Richardson from rho = 1e-5, 1e-6 removes the linear term; the remainder is O(rho^2 / gap^2) plus
    the damped solves' round-off (~eps / rho^2 x ||K||^2: 1e-4 relative at most here)."""
    x = sphere_points(6, 5, seed=1)
    x = np.concatenate([x, x[:2]])                       # two duplicated inputs
    K = ng.analytic_kernels(ng.mlp(depth, 64), x, sphere_points(4, 5, seed=2))
    method = _method(name)
    with pytest.warns(ng.TheoryConditionWarning, match="minimum-norm step"):
        op = ng.operator(method, K, 0.0)
    d5, d6 = (ng.operator(method, K, rho) for rho in (1e-5, 1e-6))
    for side in ("train", "test"):
        lim = np.asarray(getattr(op, side))
        a, b = np.asarray(getattr(d5, side)), np.asarray(getattr(d6, side))
        extrapolated = (10 * b - a) / 9
        scale = np.linalg.norm(lim)
        assert np.linalg.norm(b - lim) < 1e-3 * scale                    # 1e-6: close already
        assert np.linalg.norm(extrapolated - lim) < 1e-5 * scale


def test_constant_ce_operator_says_it_approximates_with_a_singular_block(singular_readout):
    _, x, _, _ = singular_readout
    net = ng.mlp(3, 4, out_dim=3)
    _, params = net.init_fn(jax.random.PRNGKey(2), x.shape)
    K = ng.empirical_kernels(net, params, x)
    from ntkngd.dynamics.loss_flow import min_norm_operator
    with pytest.warns(ng.TheoryConditionWarning, match="depends on the loss Hessian H"):
        op = min_norm_operator(ng.get_method("block_tridiagonal"), K, ng.get_loss("ce"))
    assert any("an approximation" in n for n in op.notes)
