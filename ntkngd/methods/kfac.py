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


def _smoother(gram: np.ndarray, shift: float) -> tuple[np.ndarray, int]:
    """(gram + shift I)^{+} and the numerical rank (see `linalg.RidgeSolver`)."""
    sm = linalg.RidgeSolver(gram, shift)
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
        sq, sb = linalg.RidgeSolver(fwd[l], shift), linalg.RidgeSolver(bwd[l], shift)
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
