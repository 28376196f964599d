"""Small dense linear-algebra helpers used by the methods (symmetric PSD matrices, dual solves)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import scipy.linalg as sla

# Relative eigenvalue threshold below which a PSD matrix is treated as singular (pseudo-inverse):
# 1e-10 for float64, scaled with the machine epsilon of the arrays' dtype as eps^(2/3)
# (float32: 6.6e-5), so that round-off of a float32 kernel is never counted as rank.
RANK_RTOL = 1e-10
_EPS64 = float(np.finfo(np.float64).eps)


def rank_rtol(dtype=np.float64) -> float:
    """The relative rank cut for arrays of `dtype`: 1e-10 (eps / eps_float64)^(2/3)."""
    eps = float(np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64).eps)
    return RANK_RTOL * (eps / _EPS64) ** (2.0 / 3.0)


def dtype_of(*arrays) -> np.dtype:
    """The widest floating dtype among `arrays` (float64 when none is floating)."""
    kinds = [np.dtype(a.dtype) for a in arrays if hasattr(a, "dtype") and np.dtype(a.dtype).kind == "f"]
    return np.result_type(*kinds) if kinds else np.dtype(np.float64)


def sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def psd_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix, tiny negative eigenvalues clipped to 0."""
    w, u = np.linalg.eigh(sym(np.asarray(a)))
    return np.clip(w, 0.0, None), u


def rank_mask(w: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Eigenvalues above rtol x the largest (rtol: `rank_rtol` of the source dtype)."""
    return w > rtol * max(float(np.max(w, initial=0.0)), np.finfo(float).tiny)


def ridge_inverse(a: np.ndarray, shift: float) -> np.ndarray:
    """(A + shift I)^{-1} for shift > 0, the pseudo-inverse A^+ for shift == 0 (A symmetric PSD)."""
    return RidgeSolver(a, shift).inverse()


def try_cholesky(a: np.ndarray, rtol: float | None = None):
    """Cholesky factor of a symmetric PD matrix, or None when it is not numerically PD (condition
    number above ~1/rtol; rtol defaults to `rank_rtol` of a's dtype)."""
    rtol = rank_rtol(dtype_of(a)) if rtol is None else rtol
    try:
        c = sla.cho_factor(sym(np.asarray(a, np.float64)), lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    d = np.abs(np.diag(c[0]))
    if d.min() <= np.sqrt(rtol) * d.max():   # condition number above ~1/rtol
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


class RidgeSolver:
    """X -> X (gram + shift I)^{+} for a symmetric PSD gram (the pseudo-inverse when shift == 0),
    factored once. Fast paths: a constant matrix g 1 1^T (the output layer's backward kernel) in
    closed form, a well-conditioned Gram by Cholesky; otherwise an eigendecomposition with a rank
    cut. `rank` is the numerical rank of gram (+ shift I)."""

    def __init__(self, gram: np.ndarray, shift: float, rtol: float | None = None):
        rtol = rank_rtol(dtype_of(gram)) if rtol is None else rtol
        gram = np.asarray(gram, np.float64)
        n = gram.shape[0]
        self.n, self.shift = n, shift
        self.const = self.chol = self.eig = None
        g0 = gram.flat[0]
        if g0 > 0 and np.all(gram == g0):
            self.const, self.rank = g0, (n if shift > 0 else 1)
            return
        self.chol = try_cholesky(gram + shift * np.eye(n), rtol)
        if self.chol is not None:
            self.rank = n
            return
        w, u = psd_eigh(gram)
        keep = rank_mask(w, rtol)
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
            return cho_solve(self.chol, x.T).T
        u, inv = self.eig
        return ((x @ u) * inv) @ u.T

    def inverse(self) -> np.ndarray:
        return self.right(np.eye(self.n))
