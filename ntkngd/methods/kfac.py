"""K-FAC: F_l ~ A_{l-1} (x) B_l, A = Ht^T Ht / N (layer input with the bias column, scaled as in the
forward pass), B = D^T D / N (D: derivatives df/du_l, all C outputs stacked as rows).

Damping is factored Tikhonov: (A + lam I) (x) (B + lam I) with lam = sqrt(rho). By push-through,
    J_l F_l^{-1} J_l^T / N = N [Q_l (Q_l + N lam I)^{-1}] o [DD^T (DD^T + N lam I)^{-1}],
with Q_l = Ht Ht^T the forward kernel (expanded over outputs) and DD^T the backward Gram; lam = 0
gives projectors (pseudo-inverses). The output layer has DD^T = 1 1^T (x) I_C and contributes the
projector of Q_L, so with full-rank factors (N <= d for the first layer, N C <= widths)
    G = (N (L - 1) + 1) I          (literal K-FAC; the paper rescales the output layer to get N L).
Test operator: the same with Q_l(X', X), DD^T(X', X) on the left. At infinite width DD^T = B_l (x) I_C.

Parameter space (finite width, augmented weight [W_l; b_l] of shape (M_{l-1}[+1], M_l), so that
(A (x) B) vec(W) <-> A W B): the gradient is Ht^T P^T D / N with P[(n, c), n'] = g_{nc} delta_{nn'},
and Woodbury ((Ht^T Ht / N + lam)^{-1} Ht^T = N Ht^T (Q + N lam)^{-1}, and the same for D) gives
    d[W_l; b_l] = (A + lam)^{-1} Ht^T P^T D (B + lam)^{-1} / N = Ht^T X^T D,
    X = N (DD^T + N lam I)^{-1} P (Q + N lam I)^{-1}       (N C x N),
pseudo-inverses when lam = 0. So the per-sample signal is A_l = X^T D (N x M_l) and the update is the
same contraction Ht^T A_l as every other method; J dtheta reproduces G g above.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from .. import linalg
from .._checks import TheoryConditionWarning
from ..linalg import serial_blas
from ..function_space import Operator
from .dual_solve import hessian_rows


def _expand(q: np.ndarray, c: int) -> np.ndarray:
    """Forward kernel over samples -> over (sample, output) pairs: Q (x) 1 1^T (sample-major)."""
    return q if c == 1 else np.kron(q, np.ones((c, c)))


def _ridge_solve(gram: jnp.ndarray, shift: float, b: jnp.ndarray) -> jnp.ndarray:
    """(gram + shift I)^+ b in jax.numpy: Cholesky when gram + shift I is numerically positive
    definite (always for shift > 0), else an eigendecomposition with the dtype's rank cut
    (`linalg.rank_rtol`), chosen on device."""
    gram = 0.5 * (gram + gram.T)
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    if shift > 0:   # the small (N C x N C) inverse, then one matrix product with the wide b
        return cho_solve((jnp.linalg.cholesky(gram + shift * eye), True), eye) @ b
    rtol = linalg.rank_rtol(gram.dtype)
    c = jnp.linalg.cholesky(gram)
    dc = jnp.abs(jnp.diagonal(c))
    ok = jnp.all(jnp.isfinite(c)) & (dc.min() > np.sqrt(rtol) * dc.max())

    def pinv():
        w, u = jnp.linalg.eigh(gram)
        keep = w > rtol * jnp.maximum(w.max(), jnp.finfo(w.dtype).tiny)
        inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
        return u @ (inv[:, None] * (u.T @ b))

    return jax.lax.cond(ok, lambda: cho_solve((c, True), eye) @ b, pinv)


def _psd_sqrt(H: jnp.ndarray) -> jnp.ndarray:
    """Per-sample H_n^{1/2} (N, C, C) of PSD output Hessians."""
    w, u = jnp.linalg.eigh(H)
    return jnp.einsum("nij,nj,nkj->nik", u, jnp.sqrt(jnp.clip(w, 0.0, None)), u)


def signals(K, damping, f, y, loss) -> list:
    """Per-layer signals A_l (N, M_l) of K-FAC for any loss (jax.numpy, jittable), so that
    d[W_l; b_l] = Ht_l^T A_l is F_l^{-1} grad_l with F_l ~ A_{l-1} (x) B_l,
    B_l = sum_n D_n^T H_n D_n / N. With R = blockdiag(H_n^{1/2}), z = R H^+ r and G = R DD^T R:
        A_l = N (Q_l + N lam)^+ Pz (G + N lam)^+ R D_l,     lam = sqrt(rho),
    pseudo-inverses when lam = 0 (MSE: R = I, z = r; see the module docstring)."""
    from .. import empirical
    empirical.require_features(K, "a K-FAC parameter-space update")
    n, c = K.n_train, K.out_dim
    shift = n * float(np.sqrt(damping))
    x = loss.pinv_residual(f, y)
    root = None if loss.identity_hessian else _psd_sqrt(loss.hessian(f))
    z = x if root is None else jnp.einsum("ncd,nd->nc", root, x)
    out = []
    for q, bwd, d in zip(K.fwd_train, K.bwd_train, K.backprops_train):
        if root is not None:
            bwd = hessian_rows(root, hessian_rows(root, bwd).T).T
            d = hessian_rows(root, d)
        yd = _ridge_solve(bwd, shift, d).reshape(n, c, -1)          # (G + N lam)^+ R D
        a = jnp.einsum("nc,ncm->nm", z.astype(yd.dtype), yd)
        out.append(n * _ridge_solve(q, shift, a))
    return out


def operator(K, damping: float = 0.0) -> Operator:
    with serial_blas(K.bwd_train.shape[-1]):
        return _operator(K, damping)


def _operator(K, damping: float) -> Operator:
    n, L = K.n_train, K.depth
    c = 1 if K.kron_outputs else K.out_dim
    fwd, bwd = np.asarray(K.fwd_train, float), np.asarray(K.bwd_train, float)
    rtol = linalg.rank_rtol(K.fwd_train.dtype)
    m = bwd.shape[1]
    train = np.zeros((m, m))
    test = np.zeros((K.n_test * c, m)) if K.has_test else None
    ranks_q, ranks_b = [], []
    shift = n * np.sqrt(damping)
    for l in range(L):     # same factors as `factor_inverses`, applied by solves (no inverse)
        sq, sb = linalg.RidgeSolver(fwd[l], shift, rtol), linalg.RidgeSolver(bwd[l], shift, rtol)
        ranks_q.append(sq.rank)
        ranks_b.append(sb.rank)
        train += n * _expand(sq.right(fwd[l]), c) * sb.right(bwd[l])
        if test is not None:
            qt, bt = np.asarray(K.fwd_test[l], float), np.asarray(K.bwd_test[l], float)
            test += n * _expand(sq.right(qt), c) * sb.right(bt)
    hidden_full = all(rb == m for rb in ranks_b[:-1])
    first_full = ranks_q[0] == n
    conditions = {
        "N <= d (first-layer input Gram invertible)": first_full,
        "every forward Gram invertible": all(r == n for r in ranks_q),
        "N C <= width (backward Grams invertible)": hidden_full,
        "damping == 0": damping == 0,
    }
    notes = ["literal K-FAC: the output layer contributes 1 (the paper's N L rescales it to N)"]
    if not first_full:
        msg = (f"K-FAC: the first-layer input Gram has rank {ranks_q[0]} < N = {n} (fewer input "
               "dimensions than points, or inputs centred on their own mean): the first layer contributes N diag(P_X), diagonal but not "
               "isotropic; put the inputs in isotropic position (ntkngd.data.forster_transform) to "
               "make it constant")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    if not hidden_full or not all(r == n for r in ranks_q[1:]):
        msg = "K-FAC: a hidden-layer factor is rank deficient (N C > width?): not isotropic"
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    alpha = float(n * (L - 1) + 1) if all(conditions.values()) else None
    return Operator("kfac", train, test, alpha, float(damping), K.out_dim, K.kron_outputs,
                    conditions, tuple(notes))
