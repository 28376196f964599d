"""Matrix-free function-space operators on row-sharded kernels (`ShardedKernels`).

The same operators as the dense path (ntkngd.methods: block.py, kfac.py), applied to vectors
instead of formed, with the same rho -> 0 (minimum-norm) semantics; every N x N factorization is
the distributed Cholesky of `linalg` (compute dtype, float64 under jax_enable_x64):

  gd                G = Theta / N, G' = Theta(X', X) / N; G^{-1} = N Theta^{-1} (Cholesky of the
                    total NTK, shared with exact NGD).
  block patterns    (exact, block_diagonal, block_tridiagonal, any block_pattern(S) with S
                    nonsingular) undamped with every block positive definite: G = (1^T S^{-1} 1) I
                    exactly and G' = sum_l c_l Theta_l(X', X) Theta_l^{-1} (c = S^{-1} 1); exact NGD
                    is the single total-NTK block. Damped exact and block-diagonal: v_l =
                    (Theta_l + N rho I)^{-1} g, G g = sum_l (g - N rho v_l), G' g = sum_l
                    Theta_l(X', X) v_l (symmetric positive definite G).
  kfac              undamped, hidden factors positive definite: G = diag(N diag(P_X) + N (L - 2)
                    + 1), P_X the first layer's input projector from its features
                    (Ht^T Ht, (d + 1) x (d + 1), dtype rank cut), and G'^T = N sum_{l<L}
                    (Q_l^{-1} Q_l'^T) o (B_l^{-1} B_l'^T) + Q_L^{-1} Q_L'^T formed row-sharded
                    (N x N', the first layer's Q-part from the features).
Anything else (singular blocks or S, damped block_tridiagonal, damped K-FAC, other methods)
raises NotImplementedError naming the dense path, never a different answer.

Accuracy: with float64 kernels the products and solves are backward stable (relative error
~ eps x condition number of each block, ~1e-12 on MNIST kernels at N = 2,000). With float32
storage every block is rounded once (relative 6e-8 per entry) and the solves then carry an
error of about 6e-8 x cond(Theta_l) (relative, in Theta_l^{-1} g; docs/sharded.md).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np

from ..methods import dual_solve, patterns
from . import krylov, linalg
from .base import ShardedOperator, _factor, _pad, _require_pd
from .kernels import ShardedKernels


def _total(K: ShardedKernels, test: bool):
    """sum_l Theta_l (train, Np x Np) or its test counterpart (transposed, Np x N'), in the
    compute dtype, cached."""
    def compute():
        import jax
        f = K.fwd_test_t if test else K.fwd_train
        b = K.bwd_test_t if test else K.bwd_train
        cdt = K.compute_dtype

        def summed(fs, bs):     # Theta_1 + ... + Theta_L, the dense path's blocks.sum(0)
            terms = [q.astype(cdt) * r.astype(cdt) for q, r in zip(fs[:-1], bs)]
            acc = fs[-1].astype(cdt)
            for term in reversed(terms):
                acc = term + acc
            return acc
        return jax.jit(summed)(tuple(f), tuple(b[:-1]))
    return K.cached("total_test" if test else "total", compute)


def _solved_test(K, weights: dict, factors: dict, test_blocks: Callable) -> Callable:
    """v -> sum_l w_l Theta_l(X', X) (L_l L_l^T)^{-1} v."""
    cdt = K.compute_dtype

    def apply(v):
        pv = _pad(K, v)
        out = 0.0
        for key, w in weights.items():
            if w != 0:
                out = out + w * linalg.rmatvec(test_blocks(key), linalg.solve(factors[key].l, pv),
                                               cdt)
        return np.asarray(out)
    return apply


# ------------------------------------------------------------------------------------ methods
def gd(K: ShardedKernels, damping: float = 0.0) -> ShardedOperator:
    """G = Theta / N, G' = Theta(X', X) / N (damping ignored, as in the dense path)."""
    n, cdt = K.n_train, K.compute_dtype
    total = _total(K, False)
    ghosts = K.padded - n

    def train(v):
        return linalg.matvec(total, _pad(K, v), cdt)[:n] / n

    def pinv(v):
        f = _factor(K, "total", lambda: total)
        _require_pd(K, {"the total NTK": f}, "gd at t -> infinity")
        return n * linalg.solve(f.l, _pad(K, v))[:n]

    def moments():   # ghosts contribute L on the diagonal of the total
        tr, fro2 = linalg.trace_and_frobenius2(total, cdt)
        L = K.depth
        return (tr - L * ghosts) / n, (fro2 - L * L * ghosts) / n ** 2

    test = None
    if K.has_test:
        tt = _total(K, True)
        test = lambda v: linalg.rmatvec(tt, _pad(K, v), cdt) / n   # noqa: E731
    return ShardedOperator("gd", "symmetric", K, damping, None, {},
                           ("anisotropic: G is the NTK's spectrum / N",), train=train, test=test,
                           pinv=pinv, moments=moments)


def pattern(K: ShardedKernels, bp: patterns.BlockPattern, damping: float = 0.0,
            name: Optional[str] = None) -> ShardedOperator:
    """A block-pattern method (module docstring): exact NGD, BD, BTD or any nonsingular S."""
    S = bp.matrix
    if S.shape[0] != K.depth:
        raise ValueError(f"block pattern is {S.shape[0]} x {S.shape[0]} but the network has "
                         f"{K.depth} layers")
    name = name or bp.name
    ok_range = patterns.ones_in_range(S)
    if not ok_range and damping == 0:
        raise ValueError("1 is not in the range of the block pattern S: the undamped update "
                         "does not exist; use damping > 0")
    exact = dual_solve.is_exact(S)
    if damping == 0 and not exact and dual_solve.has_null_space(S):
        raise NotImplementedError(f"{name}: the pattern S is singular; its rho -> 0 limit needs "
                                  "the null-space solve of the dense path")
    if damping > 0 and not (exact or np.array_equal(S, np.eye(len(S)))):
        raise NotImplementedError(f"{name}: damped patterns other than exact NGD and block "
                                  "diagonal are not in the sharded backend (use the dense path)")
    if exact:
        keys = {"total": lambda: _total(K, False)}
        tests = lambda key: _total(K, True)                     # noqa: E731
    else:
        keys = {f"layer {l + 1}": (lambda l=l: K.block(l)) for l in range(K.depth)}
        tests = lambda key: K.test_block_t(int(key.split()[1]) - 1)   # noqa: E731
    shift = K.n_train * float(damping)
    factors = {k: _factor(K, "total" if exact else f"block{k}", m, shift, temporary=not exact)
               for k, m in keys.items()}
    label = "NTK block(s)" if damping == 0 else "damped NTK block(s)"
    _require_pd(K, factors, f"{name}: {label}")
    conditions = {"1 in range(S)": ok_range, "every NTK block invertible": True,
                  "damping == 0": damping == 0}
    if damping == 0:
        c = np.ones(1) if exact else dual_solve.range_weights(S)
        weights = dict(zip(keys, c))
        alpha = float(dual_solve.range_weights(np.ones((1, 1)) if exact else S).sum())
        test = _solved_test(K, weights, factors, tests) if K.has_test else None
        return ShardedOperator(name, "isotropic", K, damping, patterns.alpha(S), conditions,
                               diag=np.full(K.n_train, alpha), test=test)
    return _damped(K, name, factors, tests, shift, conditions, ok_range)


def _damped(K, name, factors, tests, shift, conditions, ok_range) -> ShardedOperator:
    """Damped exact / block-diagonal: v_l = (Theta_l + N rho I)^{-1} g, G g = sum_l (g - N rho
    v_l), G' g = sum_l Theta_l(X', X) v_l; G^{-1} by conjugate gradients (G is symmetric with
    eigenvalues in (0, L])."""
    n, cdt = K.n_train, K.compute_dtype
    tol = krylov.default_tol(cdt)

    def train(v):
        pv = _pad(K, v)
        return sum(pv - shift * linalg.solve(f.l, pv) for f in factors.values())[:n]

    test = None
    if K.has_test:
        test = _solved_test(K, {k: 1.0 for k in factors}, factors, tests)
    notes = [] if ok_range else ["1 is not in the range of S: the damped update diverges as "
                                 "damping -> 0"]
    return ShardedOperator(name, "symmetric", K, shift / n, None, conditions, tuple(notes),
                           train=train, test=test, pinv=lambda v: krylov.cg(train, v, tol))


def operator(method, K: ShardedKernels, damping: Optional[float] = None,
             loss: Union[str, object] = "mse") -> ShardedOperator:
    """`ntkngd.operator` on sharded kernels: gd, every block pattern (exact, block_diagonal,
    block_tridiagonal, block_pattern(S)) and kfac, MSE loss (module docstring)."""
    from .. import _checks
    from ..losses import get_loss
    from ..methods import get_method
    m = get_method(method)
    if not get_loss(loss).identity_hessian:
        raise NotImplementedError(f"loss {loss!r}: the sharded backend has the MSE operators only")
    damping = _checks.non_negative(m.resolve_damping(K, damping), "damping")
    if m.kind == "gd":
        return gd(K, damping)
    if m.kind == "pattern":
        return pattern(K, m.pattern(K.depth), damping, m.name)
    if m.name == "kfac":
        from .kfac import operator as kfac_operator
        return kfac_operator(K, damping)
    raise NotImplementedError(f"method {m.name!r} is not in the sharded backend (gd, block "
                              "patterns and kfac are); use the dense path")
