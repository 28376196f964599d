"""GD, exact NGD and every layer block pattern (BD, BTD, any S): function-space operators and the
parameter-space update directions, both from the same dual vectors (`pattern_duals`).

Update (docs/theory.md, block patterns): Delta theta_l = -lr J_l^T v_l with
[(S (x) I) blockdiag(Theta_l) + N rho I] v = 1 (x) g, so Delta f = -lr sum_l Theta_l v_l.
Exact NGD is S = 1 1^T, solved as one block (the total NTK) whose v is shared by every layer.
GD is v_l = g / N for every layer (the loss gradient J^T g / N).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import empirical, linalg
from ..function_space import Operator
from . import dual_solve, patterns
from ._cache import block_factors


def _as_np(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _is_exact(S: np.ndarray) -> bool:
    return S.shape[0] == 1 or bool(np.all(S == 1))


def pattern_duals(K, pattern: patterns.BlockPattern, damping: float, rhs: np.ndarray):
    """Per-layer dual vectors v (L, m, k) for right-hand sides rhs (m, k), and notes.

    The single place where a pattern's dual system is solved: `pattern_operator` uses rhs = I,
    `pattern_signals` uses rhs = g. For exact NGD every layer gets the same v (total NTK solve)."""
    S = pattern.matrix
    if S.shape[0] != K.depth:
        raise ValueError(f"block pattern is {S.shape[0]} x {S.shape[0]} but the network has "
                         f"{K.depth} layers")
    blocks = _as_np(K.blocks_train)
    rtol = linalg.rank_rtol(K.blocks_train.dtype)
    with linalg.serial_blas(blocks.shape[-1]):
        return _pattern_duals(K, S, blocks, damping, rhs, rtol)


def _pattern_duals(K, S, blocks, damping, rhs, rtol):
    if _is_exact(S):   # S = 1 1^T is exact NGD: one block, the total NTK (same rho -> 0 limit)
        v, notes = patterns.duals(blocks.sum(0)[None], np.ones((1, 1)), K.n_train, damping, rhs,
                                  block_factors(K, "total"), rtol)
        return np.repeat(v, K.depth, 0), notes
    return patterns.duals(blocks, S, K.n_train, damping, rhs, block_factors(K, "layers"), rtol)


def gd(K, damping: float = 0.0) -> Operator:
    """Gradient descent on Loss = 1/(2N) sum ||f - y||^2: G = Theta / N, G' = Theta(X', X) / N.
    (damping is ignored: there is no matrix to invert.)"""
    n = K.n_train
    train = _as_np(K.ntk_train) / n
    test = None if not K.has_test else _as_np(K.ntk_test) / n
    return Operator("gd", train, test, None, float(damping), K.out_dim, K.kron_outputs,
                    {}, ("anisotropic: G is the NTK's spectrum / N",))


def pattern_operator(K, pattern: patterns.BlockPattern, damping: float = 0.0,
                     name: str | None = None) -> Operator:
    """G = sum_l Theta_l V_l, G' = sum_l Theta_l(X', X) V_l with V from `pattern_duals` (rhs = I)."""
    S = pattern.matrix
    m = K.blocks_train.shape[1]
    v, notes = pattern_duals(K, pattern, damping, np.eye(m))
    train = linalg.layer_sum(_as_np(K.blocks_train), v)
    test = linalg.layer_sum(_as_np(K.blocks_test), v) if K.has_test else None
    factors = block_factors(K, "total" if _is_exact(S) else "layers")
    ok_range = patterns.ones_in_range(S)
    conditions = {"1 in range(S)": ok_range,
                  "every NTK block invertible": all(f is not None for f in factors),
                  "damping == 0": damping == 0}
    alpha = patterns.alpha(S) if ok_range and damping == 0 else None
    return Operator(name or pattern.name, train, test, alpha, float(damping), K.out_dim,
                    K.kron_outputs, conditions, tuple(notes))


def exact(K, damping: float = 0.0) -> Operator:
    return pattern_operator(K, patterns.full(K.depth), damping, "exact")


def block_diagonal(K, damping: float = 0.0) -> Operator:
    return pattern_operator(K, patterns.diagonal(K.depth), damping, "block_diagonal")


def block_tridiagonal(K, damping: float = 0.0) -> Operator:
    return pattern_operator(K, patterns.tridiagonal(K.depth), damping, "block_tridiagonal")


# ---------------------------------------------------------------- parameter space (finite width)
def gd_duals(K, damping, f, y, loss):
    """Dual vectors of the loss gradient: v_l = r / N for every layer (L, N C)."""
    v = loss.residual(f, y).reshape(-1) / K.n_train
    return jnp.broadcast_to(v, (K.depth,) + v.shape)


def gd_signals(K, damping, f, y, loss) -> list:
    """Per-layer signals of the loss gradient (Delta theta = -lr J^T r / N)."""
    empirical.require_features(K, "a parameter-space update")
    return empirical.dual_signals(K.backprops_train, list(gd_duals(K, damping, f, y, loss)),
                                  K.out_dim)


def pattern_dual_vectors(K, pattern: patterns.BlockPattern, damping, f, y, loss):
    """Per-layer dual vectors v (L, N C) with d theta_l = J_l^T v_l (`dual_solve.loss_duals`:
    jax.numpy, jittable; the same dual system as `pattern_operator` with the loss's Hessian).
    Needs only the kernel blocks K.blocks_train (any architecture)."""
    S = pattern.matrix
    if S.shape[0] != K.depth:
        raise ValueError(f"block pattern is {S.shape[0]} x {S.shape[0]} but the network has "
                         f"{K.depth} layers")
    if damping == 0 and not patterns.ones_in_range(S):
        raise ValueError("1 is not in the range of the block pattern S: the undamped update "
                         "does not exist; use damping > 0")
    return dual_solve.loss_duals(K.blocks_train, S, damping, f, y, loss)


def pattern_signals(K, pattern: patterns.BlockPattern, damping, f, y, loss) -> list:
    """Per-layer signals A_l = sum_c v_l[(n, c)] D_l[(n, c)] of the pattern's dual vectors."""
    empirical.require_features(K, "a parameter-space update")
    v = pattern_dual_vectors(K, pattern, damping, f, y, loss)
    return empirical.dual_signals(K.backprops_train, list(v), K.out_dim)
