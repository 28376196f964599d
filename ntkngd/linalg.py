"""Dtype-scaled rank cuts and BLAS threading for the methods' dense solves (which are jax.numpy:
ntkngd.methods.dual_solve, kfac, unitwise)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._lazy import lazy_jit

# Relative eigenvalue threshold below which a PSD matrix is treated as singular (pseudo-inverse):
# 1e-10 for float64, scaled with the machine epsilon of the arrays' dtype as eps^(2/3)
# (float32: 6.6e-5), so that round-off of a float32 kernel is never counted as rank.
RANK_RTOL = 1e-10
_EPS64 = float(np.finfo(np.float64).eps)


def rank_rtol(dtype=np.float64) -> float:
    """The relative rank cut for arrays of `dtype`: 1e-10 (eps / eps_float64)^(2/3)."""
    eps = float(np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64).eps)
    return RANK_RTOL * (eps / _EPS64) ** (2.0 / 3.0)


@lazy_jit
def symmetrized(a):
    """(a + a^T) / 2 over the last two axes, as one fused pass (jitted: eager jax.numpy makes
    three passes over the matrix); the same bits as the eager expression, and traceable."""
    import jax.numpy as jnp
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def cholesky_symmetric(a):
    """Lower Cholesky factor(s) of a matrix (batch) that is already exactly symmetric: the same bits
    as jnp.linalg.cholesky, which would average `a` with its transpose once more (a pass over
    the matrix for nothing)."""
    import jax
    return jax.lax.linalg.cholesky(a, symmetrize_input=False)


@lazy_jit(static_argnums=1)
def factor_is_pd(c, rtol: float):
    """Per matrix of a Cholesky factor (batch) c: whether it is finite with condition number of
    c c^T below ~1/rtol, min |c_ii| > sqrt(rtol) max |c_ii|. A failed factorization is NaN, and an
    inf or NaN anywhere in c reaches the diagonal (each c_ii^2 subtracts the squares of row i),
    so only the diagonal is read."""
    import jax.numpy as jnp
    d = jnp.abs(jnp.diagonal(c, axis1=-2, axis2=-1))
    return jnp.all(jnp.isfinite(d), axis=-1) & (d.min(-1) > np.sqrt(rtol) * d.max(-1))


@lazy_jit(static_argnums=1)
def cholesky_upper(a, symmetrize: bool = False):
    """The upper Cholesky factor u = l^T (a = u^T u) of a symmetric matrix (batch), or of
    (a + a^T) / 2 with symmetrize=True, jitted in one pass with the factorization. Row-major u
    holds the bytes of the lower factor l in LAPACK's column-major order, so the solves of
    `cho_solve_upper` use it without a transposing copy (a cached lower factor costs one per
    solve). Same bits as jnp.linalg.cholesky(a).T."""
    import jax.numpy as jnp
    if symmetrize:
        a = symmetrized(a)
    return jnp.swapaxes(cholesky_symmetric(a), -1, -2)


def cho_solve_upper(u, b):
    """a^{-1} b for a = u^T u (u from `cholesky_upper`): l y = b, l^T x = y with l = u^T; the same
    bits as jax.scipy.linalg.cho_solve((l, True), b). Copy-free when traced (jit, vmap in jit)."""
    import jax
    import jax.numpy as jnp
    lower = jnp.swapaxes(u, -1, -2)
    y = jax.lax.linalg.triangular_solve(lower, b, left_side=True, lower=True)
    return jax.lax.linalg.triangular_solve(lower, y, left_side=True, lower=True,
                                           transpose_a=True, conjugate_a=True)


def eigh_symmetric(a):
    """(eigenvalues ascending, eigenvectors) of an exactly symmetric matrix (batch), without the
    second symmetrization jnp.linalg.eigh does; the same bits."""
    import jax.numpy as jnp
    return jnp.linalg.eigh(a, symmetrize_input=False)


_TRI_INV_BASE = 128


def _lower_triangular_inverse(r):
    import jax
    import jax.numpy as jnp
    p = r.shape[-1]
    if p <= _TRI_INV_BASE:
        return jax.scipy.linalg.solve_triangular(r, jnp.eye(p, dtype=r.dtype), lower=True)
    h = p // 2
    a_inv = _lower_triangular_inverse(r[:h, :h])
    c_inv = _lower_triangular_inverse(r[h:, h:])
    return jnp.block([[a_inv, jnp.zeros((h, p - h), r.dtype)],
                      [-(c_inv @ (r[h:, :h] @ a_inv)), c_inv]])


@lazy_jit
def lower_triangular_inverse(r):
    """r^{-1} for a lower-triangular matrix r (a Cholesky factor) by LAPACK trtri's blocked
    recursion: with r = [[a, 0], [b, c]], r^{-1} = [[a^{-1}, 0], [-c^{-1} b a^{-1}, c^{-1}]]
    (blocks of at most 128 solved against I); 2p^3/3 flops, nearly all matrix products, where a
    triangular solve against the identity costs p^3. inf or NaN where r is singular."""
    return _lower_triangular_inverse(r)


def kept_spectrum(a):
    """Eigendecomposition of an exactly symmetric PSD matrix (batch) with the dtype's relative
    rank cut: (eigenvalues ascending and clipped at 0, eigenvectors, keep = w > rank_rtol x the
    largest eigenvalue)."""
    import jax.numpy as jnp
    w, u = eigh_symmetric(a)
    w = jnp.clip(w, 0.0, None)
    top = jnp.maximum(w.max(-1, keepdims=True), jnp.finfo(w.dtype).tiny)
    return w, u, w > rank_rtol(w.dtype) * top


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
        # the controller lists the BLAS libraries loaded when it is made: load scipy's (jax's
        # LAPACK and scipy.linalg use it, numpy has its own) first, or it is never limited
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS)
        _BLAS_CONTROLLER = threadpoolctl.ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield
