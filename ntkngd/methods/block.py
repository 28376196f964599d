"""Function-space operators of GD, exact NGD and every layer block pattern (BD, BTD, any S)."""
from __future__ import annotations

import numpy as np

from ..function_space import Operator
from . import patterns
from ._cache import block_factors


def _as_np(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


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
    """G = sum_l Theta_l V_l, G' = sum_l Theta_l(X', X) V_l with V from `patterns.duals` (rhs = I)."""
    S = pattern.matrix
    if S.shape[0] != K.depth:
        raise ValueError(f"block pattern is {S.shape[0]} x {S.shape[0]} but the network has "
                         f"{K.depth} layers")
    blocks = _as_np(K.blocks_train)
    exact = S.shape[0] == 1 or np.all(S == 1)
    if exact:      # S = 1 1^T is exact NGD: one block, the total NTK (same rho -> 0 limit)
        blocks, S_used, factors = blocks.sum(0)[None], np.ones((1, 1)), block_factors(K, "total")
    else:
        S_used, factors = S, block_factors(K, "layers")
    m = blocks.shape[1]
    v, notes = patterns.duals(blocks, S_used, K.n_train, damping, np.eye(m), factors)
    train = np.einsum("lij,ljk->ik", blocks, v)
    test = None
    if K.has_test:
        tb = _as_np(K.blocks_test)
        tb = tb.sum(0)[None] if exact else tb
        test = np.einsum("lij,ljk->ik", tb, v)
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
