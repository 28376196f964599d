"""Small dense linear-algebra helpers used by the methods (symmetric PSD matrices, dual solves)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import scipy.linalg as sla

# Relative eigenvalue threshold below which a PSD matrix is treated as singular (pseudo-inverse).
RANK_RTOL = 1e-10


def sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def psd_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix, tiny negative eigenvalues clipped to 0."""
    w, u = np.linalg.eigh(sym(np.asarray(a)))
    return np.clip(w, 0.0, None), u


def rank_mask(w: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    return w > rtol * max(float(np.max(w, initial=0.0)), np.finfo(float).tiny)


def ridge_inverse(a: np.ndarray, shift: float, rtol: float = RANK_RTOL) -> np.ndarray:
    """(A + shift I)^{-1} for shift > 0, the pseudo-inverse A^+ for shift == 0 (A symmetric PSD)."""
    w, u = psd_eigh(a)
    if shift > 0:
        inv = 1.0 / (w + shift)
    else:
        inv = np.where(rank_mask(w, rtol), 1.0 / np.where(w > 0, w, 1.0), 0.0)
    return (u * inv) @ u.T


def numerical_rank(a: np.ndarray, rtol: float = RANK_RTOL) -> int:
    w, _ = psd_eigh(a)
    return int(rank_mask(w, rtol).sum())


def try_cholesky(a: np.ndarray):
    """Cholesky factor of a symmetric PD matrix, or None when it is not numerically PD."""
    try:
        c = sla.cho_factor(sym(np.asarray(a)), lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    d = np.abs(np.diag(c[0]))
    if d.min() <= np.sqrt(RANK_RTOL) * d.max():   # condition number above ~1/RANK_RTOL
        return None
    return c


def cho_solve(c, b: np.ndarray) -> np.ndarray:
    return sla.cho_solve(c, b, check_finite=False)


_BLAS_CONTROLLER = None
SMALL_MATRIX = 512


@contextmanager
def serial_blas(size: int = 0):
    """Run dense solves of matrices smaller than SMALL_MATRIX on one BLAS thread (no-op for larger
    ones). Multi-threaded OpenBLAS is pathological on small matrices on a busy machine (a 100 x 100
    eigh took 0.7 s with two threads against 1.5 ms with one). Usable as a decorator."""
    global _BLAS_CONTROLLER
    if size >= SMALL_MATRIX:
        yield
        return
    try:
        import threadpoolctl
    except ImportError:   # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = threadpoolctl.ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield


def layer_sum(blocks: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sum_l blocks[l] @ v[l] (BLAS matmuls; numpy's einsum would not use BLAS here)."""
    out = blocks[0] @ v[0]
    for b, x in zip(blocks[1:], v[1:]):
        out += b @ x
    return out
