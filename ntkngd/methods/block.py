"""GD, exact NGD and every layer block pattern (BD, BTD, any S): function-space operators and
parameter-space directions from the same dual solves (ntkngd.methods.dual_solve; the update
Delta theta_l = -lr J_l^T v_l is in ntkngd.methods.patterns). GD is v_l = g / N for every layer.
At rho = 0 with a nonsingular S and positive-definite blocks v_l = c_l Theta_l^{-1} (c = S^{-1} 1),
so G = (1^T S^{-1} 1) I exactly and G' = sum_l c_l Theta_l' Theta_l^{-1} is applied by solves with
the per-layer Cholesky factors (cached per Kernels, shared by every such pattern).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..dynamics.linear import FactoredMatrix, Operator
from . import dual_solve, patterns
from ..networks.empirical import dual_signals
from ..networks.kernels import require_features
from ._cache import block_factors, total_block


def _as_np(a):
    """numpy array of a jax array; None and `FactoredMatrix` stay as they are."""
    return a if a is None or isinstance(a, FactoredMatrix) else np.asarray(a)


def _check_depth(K, S: np.ndarray) -> None:
    if S.shape[0] != K.depth:
        raise ValueError(f"block pattern is {S.shape[0]} x {S.shape[0]} but the network has "
                         f"{K.depth} layers")


def pattern_duals(K, pattern: patterns.BlockPattern, damping: float, rhs):
    """Dual vectors v (L', m, k) for right-hand sides rhs (m, k), the blocks they act on
    (L', m, m) and notes: `dual_solve.pattern_duals` (jax.numpy, the kernels' dtype) on the
    per-layer blocks, or for exact NGD (S = 1 1^T) on the one total-NTK block (L' = 1, the same
    rho -> 0 limit), with Cholesky factors cached per Kernels (depth checked by the caller)."""
    S = pattern.matrix
    if dual_solve.is_exact(S):
        blocks, S, which = total_block(K), np.ones((1, 1)), "total"
    else:
        blocks, which = jnp.asarray(K.blocks_train), "layers"
    factors = None if damping > 0 else block_factors(K, which)
    with linalg.serial_blas(blocks.shape[-1]):
        v, notes = dual_solve.pattern_duals(blocks, S, K.n_train, damping,
                                            jnp.asarray(rhs, blocks.dtype), factors)
    return v, blocks, notes


def gd(K, damping: float = 0.0) -> Operator:
    """Gradient descent on Loss = 1/(2N) sum ||f - y||^2: G = Theta / N, G' = Theta(X', X) / N.
    (damping is ignored: there is no matrix to invert.)"""
    n = K.n_train
    train = _as_np(K.ntk_train) / n
    test = None if not K.has_test else _as_np(K.ntk_test) / n
    return Operator("gd", train, test, None, float(damping), K.out_dim, K.kron_outputs,
                    {}, ("anisotropic: G is the NTK's spectrum / N",))


def _test_blocks(K, which: str) -> jnp.ndarray:
    """Theta_l(X', X) (L', m', m): the per-layer test blocks, or their sum for the total NTK."""
    tb = jnp.asarray(K.blocks_test)
    return tb.sum(0)[None] if which == "total" else tb


def _solved_test(K, S: np.ndarray, which: str) -> FactoredMatrix:
    """G' = sum_l c_l Theta_l(X', X) Theta_l^{-1} (c = S^{-1} 1) kept as the cached Cholesky
    factors: `G' @ x` costs one pair of triangular solves per layer with x's columns; the N' x N
    matrix is formed only when asked for (`np.asarray`)."""
    chol = block_factors(K, which)[0]
    tb = _test_blocks(K, which)
    c = jnp.asarray(dual_solve.range_weights(S), chol.dtype)

    def apply(x):
        with linalg.serial_blas(chol.shape[-1]):
            return np.asarray(_apply_solved(c, tb, chol, jnp.asarray(x, chol.dtype)))

    def materialize():
        with linalg.serial_blas(chol.shape[-1]):
            return np.asarray(_solved_matrix(c, tb, chol))

    return FactoredMatrix(tb.shape[1:], chol.dtype, apply, materialize)


@jax.jit
def _apply_solved(c, tb, chol, x):
    """sum_l c_l Theta_l(X', X) Theta_l^{-1} x with Theta_l = u_l^T u_l (upper factors)."""
    solve = jax.vmap(linalg.cho_solve_upper, in_axes=(0, None))
    return jnp.einsum("l,lij,ljk->ik", c, tb, solve(chol, x))


@jax.jit
def _solved_matrix(c, tb, chol):
    """sum_l c_l Theta_l(X', X) Theta_l^{-1}, formed (N' solves per layer)."""
    sol = jax.vmap(linalg.cho_solve_upper)(chol, jnp.swapaxes(tb, 1, 2))
    return jnp.einsum("l,lmk->km", c, sol)


def pattern_operator(K, pattern: patterns.BlockPattern, damping: float = 0.0,
                     name: str | None = None) -> Operator:
    """G = sum_l Theta_l V_l, G' = sum_l Theta_l(X', X) V_l with V from `pattern_duals` (rhs = I;
    exact NGD: the total NTK and its one V). Undamped, nonsingular S, positive-definite blocks:
    G = (1^T S^{-1} 1) I exactly (no solve, no round-off), G' by solves (`_solved_test`)."""
    S = pattern.matrix
    _check_depth(K, S)
    m = K.blocks_train.shape[1]
    exact = dual_solve.is_exact(S)
    which = "total" if exact else "layers"
    pd = bool(np.all(np.asarray(block_factors(K, which)[1])))
    solved_S = np.ones((1, 1)) if exact else S      # exact NGD: one block, the total NTK
    if damping == 0 and pd and not dual_solve.has_null_space(solved_S):
        train = float(dual_solve.range_weights(solved_S).sum()) * np.eye(
            m, dtype=np.dtype(K.blocks_train.dtype))
        test, notes = (_solved_test(K, solved_S, which) if K.has_test else None), []
    else:
        v, blocks, notes = pattern_duals(K, pattern, damping, jnp.eye(m))
        train = jnp.einsum("lij,ljk->ik", blocks, v)
        test = jnp.einsum("lij,ljk->ik", _test_blocks(K, which), v) if K.has_test else None
    ok_range = patterns.ones_in_range(S)
    conditions = {"1 in range(S)": ok_range,
                  "every NTK block invertible": pd,
                  "damping == 0": damping == 0}
    alpha = patterns.alpha(S) if ok_range and damping == 0 else None
    return Operator(name or pattern.name, _as_np(train), _as_np(test), alpha, float(damping),
                    K.out_dim, K.kron_outputs, conditions, tuple(notes))


# ---------------------------------------------------------------- parameter space (finite width)
def gd_duals(K, damping, f, y, loss):
    """Dual vectors of the loss gradient: v_l = r / N for every layer (L, N C)."""
    v = loss.residual(f, y).reshape(-1) / K.n_train
    return jnp.broadcast_to(v, (K.depth,) + v.shape)


def gd_signals(K, damping, f, y, loss) -> list:
    """Per-layer signals of the loss gradient (Delta theta = -lr J^T r / N)."""
    require_features(K, "a parameter-space update")
    return dual_signals(K.backprops_train, list(gd_duals(K, damping, f, y, loss)), K.out_dim)


def pattern_dual_vectors(K, pattern: patterns.BlockPattern, damping, f, y, loss):
    """Per-layer dual vectors v (L, N C) with d theta_l = J_l^T v_l (`dual_solve.loss_duals`:
    jax.numpy, jittable; the same dual system as `pattern_operator` with the loss's Hessian).
    Needs only the kernel blocks K.blocks_train (any architecture)."""
    S = pattern.matrix
    _check_depth(K, S)
    if damping == 0 and not patterns.ones_in_range(S):
        raise ValueError("1 is not in the range of the block pattern S: the undamped update "
                         "does not exist; use damping > 0")
    return dual_solve.loss_duals(K.blocks_train, S, damping, f, y, loss)


def pattern_signals(K, pattern: patterns.BlockPattern, damping, f, y, loss) -> list:
    """Per-layer signals A_l = sum_c v_l[(n, c)] D_l[(n, c)] of the pattern's dual vectors."""
    require_features(K, "a parameter-space update")
    v = pattern_dual_vectors(K, pattern, damping, f, y, loss)
    return dual_signals(K.backprops_train, list(v), K.out_dim)
