"""Forster's transform: put the rows of an (N, d) array in isotropic (radial) position, unit-norm
rows with X^T X = (N/d) I, so that K-FAC's first-layer factor is isotropic when N > d
(docs/theory.md, section 3). The paper applies it to K-FAC's inputs only; `ntkngd.data` re-exports
every name here."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .data import Dataset


def _data():
    """ntkngd.data, imported on use (it imports this module)."""
    from . import data
    return data


def isotropy_error(x: Any) -> float:
    """Relative deviation ||X^T X - (N/d) I||_F / ||(N/d) I||_F of an (N, d) array from isotropy."""
    arr = _data()._finite(x, "x")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"isotropy_error expects a non-empty 2-D (N, d) array, got {arr.shape}")
    n, d = arr.shape
    target = n / d
    dev = arr.T @ arr - target * np.eye(d)
    return float(np.linalg.norm(dev) / (target * np.sqrt(d)))


def forster_fit(x: Any, iters: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """The d x d matrix M of Forster's transform x -> x M / ||x M||, fitted on the rows of x.

    After the map the rows have unit norm and X^T X = (N/d) I (isotropic position). Iterates
    X <- rownormalize(X (X^T X)^{-1/2}), accumulating M, until isotropy_error(X) < tol. Needs
    N >= d and X^T X non-singular (ValueError otherwise); points must be in general position for
    a solution to exist; if `tol` is not reached after `iters` steps a UserWarning is issued and
    the iterate with the smallest isotropy error is returned (the authors' code likewise stops
    after a fixed number of iterations). Apply the same M to test points with `forster_apply`.
    """
    arr = _data()._finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"forster_transform expects a 2-D (N, d) array, got shape {arr.shape}")
    n, d = arr.shape
    if n < d:
        raise ValueError(f"forster_transform needs at least as many points as dimensions "
                         f"(N >= d), got N={n} < d={d}")
    if iters < 1 or tol <= 0:
        raise ValueError(f"iters must be >= 1 and tol > 0, got iters={iters}, tol={tol}")
    arr = _data().unit_norm_rows(arr)
    target = n / d
    total = np.eye(d)
    best = (np.inf, total)
    for _ in range(iters):
        gram = arr.T @ arr
        err = np.linalg.norm(gram - target * np.eye(d)) / (target * np.sqrt(d))
        if err < tol:
            return total
        if err < best[0]:
            best = (err, total.copy())
        evals, evecs = np.linalg.eigh(gram)
        if evals[0] <= evals[-1] * max(n, d) * np.finfo(np.float64).eps:
            rank = int(np.sum(evals > evals[-1] * max(n, d) * np.finfo(np.float64).eps))
            raise ValueError(f"degenerate data: X^T X is singular (numerical rank {rank} < d={d}); "
                             f"the points must span R^d and be in general position")
        inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
        total = total @ inv_sqrt
        total /= np.linalg.norm(total, 2)          # scale is irrelevant; keep it O(1)
        arr = _data().unit_norm_rows(arr @ inv_sqrt)
    err = isotropy_error(arr)
    if err < best[0]:
        best = (err, total)
    if best[0] >= tol:
        warnings.warn(f"forster_transform did not converge in {iters} iterations: smallest "
                      f"isotropy error {best[0]:.3e} >= tol {tol:.1e} (points may not be in "
                      f"general position); returning that iterate", UserWarning, stacklevel=2)
    return best[1]


def span_isotropy_error(x: Any, rank: int | None = None) -> tuple[float, int]:
    """(||V^T X^T X V - (N/r) I||_F / ||(N/r) I||_F, r): `isotropy_error` inside the span V of
    the r leading right singular vectors of X (r = `rank`, or the numerical rank: cut at
    max(N, d) eps times the largest singular value)."""
    arr = _data()._finite(x, "x")
    _, s, vt = np.linalg.svd(arr, full_matrices=False)
    r = rank or int(np.sum(s > s[0] * max(arr.shape) * np.finfo(np.float64).eps))
    return isotropy_error(arr @ vt[:r].T), r


def forster_fit_span(x: Any, iters: int = 5000, tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """Forster's transform inside the span of the rows of x: (d x d matrix M, rank r).

    Rank-deficient inputs (e.g. digits whose constant border pixels give identical columns after
    the global standardization and unit norm) have no isotropic position in R^d; in the
    r-dimensional span V_r of the rows they may have one. M = V_r M_r V_r^T with M_r from
    `forster_fit` on x V_r, so that after x -> x M / ||x M|| the non-zero eigenvalues of X^T X all
    equal N / r (K-FAC's first-layer condition on the span). Needs N >= r; rank cut at
    max(N, d) eps times the largest singular value.
    """
    arr = _data().unit_norm_rows(_data()._finite(x, "x"))
    _, s, vt = np.linalg.svd(arr, full_matrices=False)
    r = int(np.sum(s > s[0] * max(arr.shape) * np.finfo(np.float64).eps))
    if r == arr.shape[1]:
        return forster_fit(arr, iters, tol), r
    v = vt[:r].T
    return v @ forster_fit(arr @ v, iters, tol) @ v.T, r


def forster_apply(x: Any, matrix: np.ndarray) -> np.ndarray:
    """x -> x M / ||x M|| row-wise (M from `forster_fit`)."""
    return _data().unit_norm_rows(_data()._finite(x, "x") @ matrix)


def forster_transform(x: Any, iters: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """Put the rows of an (N, d) array in isotropic (radial) position: Forster's transform.

    Output rows have unit norm and X^T X = (N/d) I. See `forster_fit` for the algorithm and errors.
    """
    return forster_apply(x, forster_fit(x, iters, tol))


def forster_dataset(ds: "Dataset", iters: int = 5000, tol: float = 1e-10,
                    span: bool = False) -> "Dataset":
    """Fit Forster's transform on the training inputs and apply it to both splits.

    span=True fits it inside the span of the training inputs when they are rank-deficient
    (`forster_fit_span`); the recorded preprocessing then names the rank."""
    import dataclasses
    if span:
        m, r = forster_fit_span(ds.x_train, iters, tol)
    else:
        m, r = forster_fit(ds.x_train, iters, tol), ds.input_dim
    where = "" if r == ds.input_dim else f" in the rank-{r} span of the training inputs"
    xtr = forster_apply(ds.x_train, m)
    err = span_isotropy_error(xtr, r)[0]
    return dataclasses.replace(ds, x_train=xtr, x_test=forster_apply(ds.x_test, m),
                               name=ds.name + " (Forster)",
                               preprocessing=ds.preprocessing + f" + Forster{where} ({iters} "
                               f"iterations, isotropy error {err:.2g}; fitted on the training "
                               "inputs, applied to both splits)")
