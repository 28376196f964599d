"""K-FAC's undamped function-space operator on row-sharded kernels (ntkngd.methods.kfac, rho = 0).

Per layer the dense operator is N [Q_l Q_l^+] o [B_l B_l^+] on the training points and
N [Q_l' Q_l^+] o [B_l' B_l^+] on the test points. Here:
  first layer, Q-part: from the features Ht (N x p, p = d + 1) through the dense K-FAC's own
      p x p basis W (`methods._factors.feature_basis`: R^{-T} when a Cholesky factor of Ht^T Ht
      certifies full rank, else V_k diag(w_k)^{-1/2} on the dtype's kept spectrum) and
      A = Ht W: Q_1 Q_1^+ = A A^T (the projector P_X; diagonal diag(P_X) on the training
      points) and (Q_1' Q_1^+)^T = A (Ht' W)^T, row-sharded;
  other layers, Q-part and every B-part but the output layer's: the distributed Cholesky factor
      (positive definite, else NotImplementedError): train part I, test part F^{-1} F'^T by
      block substitution with the N' right-hand sides row-sharded (`linalg.solve_rows`), one
      factor alive at a time;
  output layer, B_L = 1 1^T: B_L B_L^+ = 1 1^T / N (closed form).
So G = diag(N diag(P_X) + N (L - 2) + 1) and G'^T (N x N') is accumulated row-sharded; no device
holds more than its rows of any N x N or N x N' matrix.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from .._checks import TheoryConditionWarning
from . import linalg
from .base import ShardedOperator, _pad, _require_pd
from .kernels import ShardedKernels


def _first_layer(K: ShardedKernels):
    """(A padded (Np, k), Ht' basis (N', k) or None, rank k) of the first layer's features."""
    import jax.numpy as jnp
    cdt = K.compute_dtype
    from ..methods._factors import feature_basis     # the dense K-FAC's own basis
    ht = jnp.asarray(K.first_inputs_train, cdt)
    basis, k = feature_basis(ht, 0.0)
    basis = np.asarray(basis)
    a = np.asarray(ht) @ basis
    bt = None if K.first_inputs_test is None else np.asarray(K.first_inputs_test, cdt) @ basis
    return linalg.pad_rows(a, K.padded), bt, k


def _solved_t(K, name: str, matrix, rhs_t):
    """F^{-1} F'^T (Np, N') row-sharded (None without test points) for F = matrix(), factored
    here and dropped afterwards (one factor alive at a time); NotImplementedError unless F is
    numerically positive definite."""
    l, d = linalg.cholesky(matrix, K.compute_dtype)
    _require_pd(K, {name: linalg.Factor(l, d, K.n_train)}, "kfac: forward/backward Gram")
    return None if rhs_t is None else linalg.solve_rows(l, rhs_t)


@functools.lru_cache(maxsize=None)
def _programs(mesh):
    """Jitted z + s x o y (and its first term), A B^T: compiled once per mesh."""
    import jax
    from . import mesh as meshes
    rows = meshes.rows(mesh)
    return {"first": jax.jit(lambda x, y, s: s * x * y),
            "add": jax.jit(lambda z, x: z + x),
            "term": jax.jit(lambda z, x, y, s: z + s * x * y),
            "outer": jax.jit(lambda a, b: a @ b.T, out_shardings=rows)}


def _accumulate(K, z, x, y, scale: float):
    """z + scale x o y (y None: z + x), row-sharded, one pass each."""
    prog = _programs(K.mesh)
    if y is None:
        return x if z is None else prog["add"](z, x)
    return prog["first"](x, y, scale) if z is None else prog["term"](z, x, y, scale)


def _features_test(K, a_pad: np.ndarray, bt: np.ndarray):
    """(Q_1' Q_1^+)^T = A bt^T (Np, N'), row-sharded."""
    from . import mesh as meshes
    a = linalg.rows_from_host(a_pad, K.mesh, K.compute_dtype)
    b = meshes.put_replicated(bt, K.mesh, K.compute_dtype)
    return _programs(K.mesh)["outer"](a, b)


def operator(K: ShardedKernels, damping: float = 0.0):
    """The undamped K-FAC operator (module docstring) as a `ShardedOperator`."""
    if damping != 0:
        raise NotImplementedError("kfac: the damped K-FAC operator is not in the sharded backend "
                                  "(use damping = 0 or the dense path)")
    n, L, cdt = K.n_train, K.depth, K.compute_dtype
    a_pad, bt, rank_q1 = _first_layer(K)
    if L == 1 and rank_q1 < n:
        raise NotImplementedError("kfac: a one-layer network with N > d + 1 has a non-diagonal "
                                  "operator; use the dense path")
    p_diag = np.sum(a_pad[:n] ** 2, axis=1)
    first = p_diag if rank_q1 < n else np.ones(n)
    diag = (n * first if L > 1 else first) + n * max(L - 2, 0) + (1.0 if L > 1 else 0.0)
    z = None
    for l in range(L):     # Q-part (features for l = 0), B-part (none for the output layer)
        if l == 0:
            x = _features_test(K, a_pad, bt) if K.has_test else None
        else:
            x = _solved_t(K, f"Q_{l + 1}", K.fwd_train[l], K.fwd_test_t[l] if K.has_test else None)
        y = None if l == L - 1 else _solved_t(K, f"B_{l + 1}", K.bwd_train[l],
                                              K.bwd_test_t[l] if K.has_test else None)
        if K.has_test:
            z = _accumulate(K, z, x, y, float(n))
        del x, y
    conditions = {"N <= d (first-layer input Gram invertible)": rank_q1 == n,
                  "every forward Gram invertible": rank_q1 == n,
                  "N C <= width (backward Grams invertible)": True,
                  "damping == 0": True}
    notes = ["literal K-FAC: the output layer contributes 1 (the paper's N L rescales it to N)"]
    if rank_q1 < n:
        msg = (f"K-FAC: the first-layer input Gram has rank {rank_q1} < N = {n}: the first layer "
               "contributes N diag(P_X), diagonal but not isotropic unless the inputs are in "
               "isotropic position (ntkngd.data.forster_transform)")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    alpha = float(n * (L - 1) + 1) if all(conditions.values()) else None
    test = None
    if z is not None:
        test = lambda v: linalg.rmatvec(z, _pad(K, v), cdt)   # noqa: E731
    kind = "isotropic" if np.all(diag == diag[0]) else "diagonal"
    return ShardedOperator("kfac", kind, K, 0.0, alpha, conditions, tuple(notes),
                           diag=diag, test=test)
