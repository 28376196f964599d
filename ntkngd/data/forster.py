"""Forster's transform: put the rows of an (N, d) array in isotropic (radial) position, unit-norm
rows with X^T X = (N/r) I on their r-dimensional span, so that K-FAC's first-layer factor is
isotropic when N > d (docs/theory.md, section 3; the paper applies it to K-FAC's inputs only).

As in the authors' code the iteration X <- rownormalize(X (X^T X)^{-1/2}) runs on the rows (their
product is ill conditioned); test points get the same steps, in chunks of condition number below
`CHUNK_COND`. Where k directions are spanned by fewer than k N / r points, no isotropic position
exists: `forster_fit(span=True)` finds such rows (a probe run, certified by a rank count) and
removes their private directions first (`ForsterMap.deflated`)."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from .._checks import positive, positive_int
from .dataset import Dataset, finite, unit_norm_rows


_EPS = np.finfo(np.float64).eps
CHUNK_COND = 1e6          # largest condition number of a recorded product of iteration steps
_PROBE_ITERS = 30         # iterations of the probe that looks for privately owned directions
_LOW = 0.75               # a Gram eigenvalue below _LOW N / r marks an owned direction


def _gram_error(gram: np.ndarray, n: int) -> float:
    """||G - (N/r) I||_F / ||(N/r) I||_F for the (r, r) Gram matrix G of N rows."""
    r = gram.shape[0]
    target = n / r
    return float(np.linalg.norm(gram - target * np.eye(r)) / (target * np.sqrt(r)))


def isotropy_error(x: Any) -> float:
    """Relative deviation ||X^T X - (N/d) I||_F / ||(N/d) I||_F of an (N, d) array from isotropy."""
    arr = finite(x, "x")
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"isotropy_error expects a non-empty 2-D (N, d) array, got {arr.shape}")
    return _gram_error(arr.T @ arr, arr.shape[0])


def _rank(s: np.ndarray, shape: tuple, scale: float | None = None) -> int:
    """Numerical rank: singular values above max(shape) eps times `scale` (default s[0])."""
    if s.size == 0:
        return 0
    return int(np.sum(s > (s[0] if scale is None else scale) * max(shape) * _EPS))


@dataclass(frozen=True)
class ForsterMap:
    """Forster's transform fitted on training rows: x -> project on `basis` (d, r), then x <- x C /
    ||x C|| for each recorded chunk C (products of iteration steps), then back to R^d.
    isotropy_error: of the transformed training rows; min_row_ratio: shortest / longest row before
    a normalisation (collapse indicator); deflated: rows whose private directions were removed."""

    basis: np.ndarray
    chunks: tuple
    iterations: int
    isotropy_error: float
    min_row_ratio: float
    input_rank: int
    deflated: tuple = ()

    @property
    def rank(self) -> int:
        """Dimension r of the span the transformed rows are isotropic in."""
        return int(self.basis.shape[1])

    @property
    def dim(self) -> int:
        """Input dimension d."""
        return int(self.basis.shape[0])

    def apply(self, x: Any) -> np.ndarray:
        """The fitted map on the rows of an (N', d) array (test points, or the training rows)."""
        arr = finite(x, "x")
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"ForsterMap.apply expects an (N, {self.dim}) array, got shape "
                             f"{arr.shape}")
        z = unit_norm_rows(arr @ self.basis)
        for c in self.chunks:
            z = unit_norm_rows(z @ c)
        return z @ self.basis.T

    def describe(self, tol: float = 1e-10) -> str:
        """One line for a data set's recorded preprocessing (numbers to 2 digits, round-off
        recorded as a bound)."""
        where = (f"in the rank-{self.rank} span of the training inputs" if not self.deflated else
                 f"in the rank-{self.rank} span shared by the training inputs (input rank "
                 f"{self.input_rank}; the private directions of {len(self.deflated)} training "
                 f"row(s), which admit no isotropic position, removed)")
        err = (f"< {tol:.0e}" if self.isotropy_error < tol else f"{self.isotropy_error:.2g}")
        return (f"Forster {where} ({self.iterations} iterations on the rows, isotropy error "
                f"{err}; fitted on the training inputs, applied to both splits)")


def _right_singular(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(singular values, V^T) of a square matrix; LAPACK's gesvd where gesdd does not converge
    (it fails on some well-conditioned inputs with some OpenBLAS kernels)."""
    try:
        return np.linalg.svd(r)[1:]
    except np.linalg.LinAlgError:
        return scipy.linalg.svd(r, lapack_driver="gesvd")[1:]


def _step(z: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One iteration on unit rows z (N, r): (m, cond, error) with m = (Z^T Z)^{-1/2} scaled to
    spectral norm 1 (the scale is irrelevant), its condition number, and the isotropy error of
    z. m comes from the SVD Z = Q R = Q U S V^T (m = V (s_min / S) V^T), so the rank test is the
    same singular-value cut that chose the span; a rank-deficient Z is a ValueError."""
    n, r = z.shape
    s, vt = _right_singular(np.linalg.qr(z, mode="r"))
    rank = _rank(s, z.shape)
    if rank < r:
        raise ValueError(f"degenerate data: X^T X is singular (numerical rank {rank} < d={r}); "
                         f"the points must span R^d and be in general position")
    m = (vt.T * (s[-1] / s)) @ vt
    return m, float(s[0] / s[-1]), _gram_error(z.T @ z, n)


def _iterate(z: np.ndarray, iters: int, tol: float) -> tuple[np.ndarray, list, int, float, float]:
    """Forster's iteration on unit rows z: (rows, chunks, iterations, error, min row ratio)."""
    chunks: list = []
    cond, ratio = np.inf, 1.0
    for it in range(iters + 1):      # iters >= 1: `it` is always bound
        m, c, err = _step(z)
        if err < tol or it == iters:
            break
        y = z @ m
        norms = np.linalg.norm(y, axis=1)
        ratio = min(ratio, float(norms.min() / norms.max()))
        z = y / norms[:, None]
        if cond * c > CHUNK_COND:
            chunks.append(m)
            cond = c
        else:
            chunks[-1] = chunks[-1] @ m
            cond *= c
    return z, chunks, it, err, ratio


def _owners(z: np.ndarray) -> np.ndarray:
    """Rows that a probe run of the iteration pushes into directions with a Gram eigenvalue
    below _LOW N / r (candidates for a privately owned subspace), as indices."""
    n, r = z.shape
    z = _iterate(z, _PROBE_ITERS, 0.0)[0]
    evals, evecs = np.linalg.eigh(z.T @ z)
    low = evecs[:, evals < _LOW * n / r]
    return np.flatnonzero(np.sum((z @ low) ** 2, axis=1) > 0.5)


def _obstruction(x: np.ndarray, basis: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A certified privately owned subspace of the unit rows x in span(basis): (owners, Q) with Q
    an orthonormal basis of the span of the other rows, or two empty arrays. A set S of rows owns
    k = r - rank(others) directions; isotropic position needs |S| >= k N / r."""
    n, r = x.shape[0], basis.shape[1]
    none = np.zeros(0, dtype=int), np.zeros((x.shape[1], 0))
    if n <= r:
        return none
    owners = _owners(x @ basis)
    if owners.size == 0 or owners.size == n:
        return none
    _, s, vt = np.linalg.svd(np.delete(x, owners, axis=0), full_matrices=False)
    k = _rank(s, x.shape, scale)
    if not owners.size * r < (r - k) * n:    # not an obstruction
        return none
    return owners, vt[:k].T


def _shared_span(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, tuple]:
    """Unit rows of x projected on the largest span with no privately owned subspace
    (`_obstruction`, removed and searched again): (rows, basis (d, r), input rank, deflated)."""
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    scale = s[0]
    r = _rank(s, x.shape)
    input_rank, deflated = r, []
    while True:
        owners, q = _obstruction(x, vt[:r].T, scale)
        if owners.size == 0:
            break
        try:
            x = unit_norm_rows(x @ q @ q.T)
        except ValueError:
            raise ValueError(f"training rows {owners.tolist()} lie entirely in directions no "
                             f"other row spans; no isotropic position exists") from None
        deflated += owners.tolist()
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        r = _rank(s, x.shape, scale)
    return x, vt[:r].T, input_rank, tuple(sorted(set(deflated)))


def _fit(x: Any, iters: int, tol: float, span: bool) -> tuple[ForsterMap, np.ndarray]:
    """(map, transformed training rows); see `forster_fit`."""
    arr = finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"forster_transform expects a 2-D (N, d) array, got shape {arr.shape}")
    iters, tol = positive_int(iters, "iters"), positive(tol, "tol")
    n, d = arr.shape
    arr = unit_norm_rows(arr)
    if span:
        arr, basis, input_rank, deflated = _shared_span(arr)
        if n < basis.shape[1]:
            raise ValueError(f"forster_transform needs at least as many points as the rank of "
                             f"their span, got N={n} < r={basis.shape[1]}")
    else:
        if n < d:
            raise ValueError(f"forster_transform needs at least as many points as dimensions "
                             f"(N >= d), got N={n} < d={d}")
        basis, input_rank, deflated = np.eye(d), d, ()
        owners, q = _obstruction(arr, basis, float(np.linalg.norm(arr, 2)))
        if owners.size:
            raise ValueError(f"no isotropic position in R^{d}: rows {owners[:10].tolist()} alone "
                             f"span {d - q.shape[1]} direction(s), fewer than N/d = {n / d:.3g} "
                             f"points per direction; fit inside the span the points share "
                             f"(span=True)")
    z, chunks, it, err, ratio = _iterate(arr @ basis, iters, tol)
    if err >= tol:
        warnings.warn(f"forster_transform did not converge in {iters} iterations: isotropy error "
                      f"{err:.3e} >= tol {tol:.1e} (points may not be in general position)",
                      UserWarning, stacklevel=3)
    fmap = ForsterMap(basis, tuple(chunks), it, err, ratio, input_rank, deflated)
    return fmap, z @ basis.T


def forster_fit(x: Any, iters: int = 5000, tol: float = 1e-10, span: bool = False) -> ForsterMap:
    """Forster's transform fitted on the rows of x (a `ForsterMap`; apply it with `forster_apply`):
    X <- rownormalize(X (X^T X)^{-1/2}) until isotropy_error(X) < tol or `iters` steps (then a
    UserWarning gives the error reached; the authors' code also stops after a fixed count).
    span=False needs N >= d, X^T X non-singular and no privately owned directions (ValueError);
    span=True works in the span of the rows (rank cut at max(N, d) eps times the largest singular
    value) and first removes privately owned directions (module docstring)."""
    return _fit(x, iters, tol, span)[0]


def span_isotropy_error(x: Any, rank: int | None = None) -> tuple[float, int]:
    """(||V^T X^T X V - (N/r) I||_F / ||(N/r) I||_F, r): `isotropy_error` inside the span V of
    the r leading right singular vectors of X (r = `rank`, or the numerical rank: cut at
    max(N, d) eps times the largest singular value)."""
    arr = finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"span_isotropy_error expects a 2-D (N, d) array, got shape {arr.shape}")
    _, s, vt = np.linalg.svd(arr, full_matrices=False)
    r = _rank(s, arr.shape) if rank is None else positive_int(rank, "rank")
    if r > s.size:
        raise ValueError(f"rank must be at most min(N, d) = {s.size}, got {rank}")
    return isotropy_error(arr @ vt[:r].T), r


def forster_fit_span(x: Any, iters: int = 5000, tol: float = 1e-10) -> tuple[ForsterMap, int]:
    """(forster_fit(x, span=True), its rank r)."""
    fmap = forster_fit(x, iters, tol, span=True)
    return fmap, fmap.rank


def forster_apply(x: Any, fmap: ForsterMap) -> np.ndarray:
    """x -> the fitted map on every row (`ForsterMap.apply`)."""
    if not isinstance(fmap, ForsterMap):
        raise TypeError(f"forster_apply expects a ForsterMap from forster_fit, got "
                        f"{type(fmap).__name__}")
    return fmap.apply(x)


def forster_transform(x: Any, iters: int = 5000, tol: float = 1e-10,
                      span: bool = False) -> np.ndarray:
    """Put the rows of an (N, d) array in isotropic (radial) position: Forster's transform.

    Output rows have unit norm and X^T X = (N/d) I (N/r on the span with span=True). See
    `forster_fit` for the algorithm and errors."""
    return _fit(x, iters, tol, span)[1]


def forster_dataset(ds: Dataset, iters: int = 5000, tol: float = 1e-10,
                    span: bool = False) -> Dataset:
    """Fit Forster's transform on the training inputs (their transformed rows train) and apply
    the same map to the test inputs; the recorded preprocessing names the span, the iterations
    and the isotropy error reached."""
    fmap, xtr = _fit(ds.x_train, iters, tol, span)
    return dataclasses.replace(ds, x_train=xtr, x_test=fmap.apply(ds.x_test),
                               name=ds.name + " (Forster)",
                               preprocessing=ds.preprocessing + " + " + fmap.describe(tol))
