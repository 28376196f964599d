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

import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from ..linalg import serial_blas
from ..function_space import Operator


def _expand(q: np.ndarray, c: int) -> np.ndarray:
    """Forward kernel over samples -> over (sample, output) pairs: Q (x) 1 1^T (sample-major)."""
    return q if c == 1 else np.kron(q, np.ones((c, c)))


class _Smoother:
    """X -> X (gram + shift I)^{+} for a symmetric PSD gram (the pseudo-inverse when shift == 0),
    factored once. Fast paths: a constant matrix g 1 1^T (the output layer's backward kernel) in
    closed form, a well-conditioned Gram by Cholesky; otherwise an eigendecomposition with a rank
    cut. `rank` is the numerical rank of gram (+ shift I)."""

    def __init__(self, gram: np.ndarray, shift: float):
        n = gram.shape[0]
        self.n, self.shift = n, shift
        self.const = self.chol = self.eig = None
        g0 = gram.flat[0]
        if g0 > 0 and np.all(gram == g0):
            self.const, self.rank = g0, (n if shift > 0 else 1)
            return
        self.chol = linalg.try_cholesky(gram + shift * np.eye(n))
        if self.chol is not None:
            self.rank = n
            return
        w, u = linalg.psd_eigh(gram)
        keep = linalg.rank_mask(w)
        inv = 1.0 / (w + shift) if shift > 0 else np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
        self.eig, self.rank = (u, inv), int(keep.sum())

    def right(self, x: np.ndarray) -> np.ndarray:
        """x (gram + shift I)^+ for x of shape (k, n)."""
        if self.const is not None:
            g0, n, s = self.const, self.n, self.shift
            if s > 0:   # (g0 1 1^T + s I)^{-1} = (I - g0 1 1^T / (s + n g0)) / s
                return (x - x.sum(1, keepdims=True) * (g0 / (s + n * g0))) / s
            return np.repeat(x.sum(1, keepdims=True) / (n * n * g0), n, axis=1)
        if self.chol is not None:
            return linalg.cho_solve(self.chol, x.T).T
        u, inv = self.eig
        return ((x @ u) * inv) @ u.T

    def inverse(self) -> np.ndarray:
        return self.right(np.eye(self.n))


def _smoother(gram: np.ndarray, shift: float) -> tuple[np.ndarray, int]:
    """(gram + shift I)^{+} and the numerical rank (see `_Smoother`)."""
    sm = _Smoother(gram, shift)
    return sm.inverse(), sm.rank


def factor_inverses(K, damping: float) -> list:
    """Per layer ((Q_l + N lam I)^+, rank, (DD^T_l + N lam I)^+, rank), lam = sqrt(rho): the one
    place where the K-FAC factors are inverted (operator and parameter update share it)."""
    shift = K.n_train * np.sqrt(damping)
    fwd, bwd = np.asarray(K.fwd_train, float), np.asarray(K.bwd_train, float)
    return [_smoother(fwd[l], shift) + _smoother(bwd[l], shift) for l in range(K.depth)]


def signals(K, damping: float, g: np.ndarray) -> list:
    """Per-layer signals A_l = X_l^T D_l (N, M_l), X_l = N (DD^T + N lam)^+ P (Q + N lam)^+, so that
    d[W_l; b_l] = Ht_l^T A_l is the K-FAC direction F_l^{-1} grad_l (see the module docstring)."""
    from .. import empirical   # noqa: local to keep the module's imports minimal
    empirical.require_features(K, "a K-FAC parameter-space update")
    with serial_blas(K.bwd_train.shape[-1]):
        return _signals(K, damping, g)


def _signals(K, damping: float, g: np.ndarray) -> list:
    n, c = K.n_train, K.out_dim
    r = np.asarray(g, np.float64).reshape(n, c)
    out = []
    for (q_inv, _, b_inv, _), d in zip(factor_inverses(K, damping), K.backprops_train):
        d64 = np.asarray(d, np.float64)
        y = (b_inv @ d64).reshape(n, c, -1)                 # (DD^T + N lam)^+ D, sample-major
        a = n * q_inv @ np.einsum("nc,ncm->nm", r, y)      # N (Q + N lam)^+ P^T (...)
        out.append(a)
    return out


def operator(K, damping: float = 0.0) -> Operator:
    with serial_blas(K.bwd_train.shape[-1]):
        return _operator(K, damping)


def _operator(K, damping: float) -> Operator:
    n, L = K.n_train, K.depth
    c = 1 if K.kron_outputs else K.out_dim
    fwd, bwd = np.asarray(K.fwd_train, float), np.asarray(K.bwd_train, float)
    m = bwd.shape[1]
    train = np.zeros((m, m))
    test = np.zeros((K.n_test * c, m)) if K.has_test else None
    ranks_q, ranks_b = [], []
    shift = n * np.sqrt(damping)
    for l in range(L):     # same factors as `factor_inverses`, applied by solves (no inverse)
        sq, sb = _Smoother(fwd[l], shift), _Smoother(bwd[l], shift)
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
