"""Krylov methods on host vectors with a (sharded) symmetric operator: Lanczos for f(G) g and the
extreme eigenvalues, conjugate gradients for G^{-1} g.

Lanczos (one independent recursion per column of g, run in lock step, full reorthogonalization
twice per step, so the basis stays orthonormal to working precision):
    G V_m = V_m T_m + beta_m v_{m+1} e_m^T,     f(G) g ~ ||g|| V_m f(T_m) e_1.
For every requested function the coefficient vector f(T_m) e_1 is recomputed every CHECK steps;
the recursion stops when none moved by more than `tol` (relative, 2-norm) since the last check,
or at an invariant subspace (beta_m <= eps ||T|| for a column: exact from then on), or at
m = size (exact in exact arithmetic). The result's relative error is then about `tol` for
functions analytic on the spectrum (exp(-t G), (1 - exp(-t G)) G^{-1}, (I - lr G)^t): the
successive-difference estimate of the error of a converging Krylov approximation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

CHECK = 8


def default_tol(dtype) -> float:
    """Relative tolerance of the Krylov results: 1e-10 in float64, 1e-5 in float32
    (~ 10^6 eps of the dtype, the accuracy a backward-stable recursion can reach on kernels
    with condition numbers up to ~10^5)."""
    return 1e-10 if np.dtype(dtype).itemsize >= 8 else 1e-5


class Lanczos:
    """Lanczos recursions for the columns of g (n, k) under `matvec` (n, k) -> (n, k)."""

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], g: np.ndarray):
        g = np.asarray(g, float)
        self.matvec = matvec
        self.norm = np.linalg.norm(g, axis=0)                     # (k,)
        safe = np.where(self.norm > 0, self.norm, 1.0)
        self.V = [g / safe]
        self.alpha: list[np.ndarray] = []
        self.beta: list[np.ndarray] = []
        self.active = self.norm > 0
        self.size = g.shape[0]

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def step(self) -> None:
        """One Lanczos step for every column. A column whose new residual is at round-off level
        (beta <= sqrt(n) eps ||T||: its Krylov space is invariant) stops: beta = 0 and a zero next
        vector, so its later alpha are 0 and f(T) e_1 no longer changes."""
        v = self.V[-1]
        w = np.asarray(self.matvec(v), float)
        a = np.einsum("nk,nk->k", v, w)
        basis = np.stack(self.V)                                  # (m, n, k)
        for _ in range(2):                                        # full reorthogonalization
            w = w - np.einsum("mnk,mk->nk", basis, np.einsum("mnk,nk->mk", basis, w))
        b = np.linalg.norm(w, axis=0)
        scale = np.max(np.abs(np.stack(self.alpha + [a] + self.beta)), axis=0)
        self.active = self.active & (b > np.sqrt(self.size) * np.finfo(float).eps * scale)
        b = np.where(self.active, b, 0.0)
        self.alpha.append(a)
        self.beta.append(b)
        self.V.append(np.where(self.active, w / np.where(b > 0, b, 1.0), 0.0))

    def _eig(self, col: int):
        m = self.steps
        T = np.diag([a[col] for a in self.alpha])
        if m > 1:
            off = [b[col] for b in self.beta[:m - 1]]
            T += np.diag(off, 1) + np.diag(off, -1)
        return np.linalg.eigh(T)

    def coefficients(self, fns: Sequence[Callable]) -> np.ndarray:
        """f(T_m) e_1 ||g|| for every function and column: (F, T, m, k) where each f maps
        eigenvalues (m,) to (T, m)."""
        m, k = self.steps, len(self.norm)
        out = None
        for col in range(k):
            lam, q = self._eig(col)
            for i, f in enumerate(fns):
                vals = np.asarray(f(lam))                          # (T, m)
                c = (q * vals[:, None, :]) @ q[0]                  # (T, m)
                if out is None:
                    out = np.zeros((len(fns), vals.shape[0], m, k))
                out[i, :, :, col] = c * self.norm[col]
        return out

    def combine(self, coef: np.ndarray) -> np.ndarray:
        """V_m coef: (F, T, m, k) -> (F, T, n, k)."""
        basis = np.stack(self.V[:self.steps])                     # (m, n, k)
        return np.einsum("mnk,ftmk->ftnk", basis, coef)

    def extremes(self) -> tuple[float, float]:
        """(largest, smallest) Ritz value over the columns."""
        ev = [self._eig(c)[0] for c in range(len(self.norm)) if self.norm[c] > 0]
        return float(max(e[-1] for e in ev)), float(min(e[0] for e in ev))


def apply_functions(matvec, g: np.ndarray, fns: Sequence[Callable], tol: float,
                    max_steps: int = 0) -> np.ndarray:
    """[f(G) g for f in fns] as (F, T, n, k) by Lanczos (module docstring). max_steps: 0 = n."""
    lz = Lanczos(matvec, g)
    limit = min(max_steps or lz.size, lz.size)
    prev = None
    while lz.steps < limit:
        lz.step()
        if not lz.active.any() or lz.steps == limit or lz.steps % CHECK == 0:
            coef = lz.coefficients(fns)
            if not lz.active.any() or lz.steps == limit:
                break
            if prev is not None:
                old = np.zeros_like(coef)
                old[:, :, :prev.shape[2]] = prev
                num = np.linalg.norm(coef - old, axis=2)
                den = np.maximum(np.linalg.norm(coef, axis=2), 1e-300)
                if np.all(num <= tol * den):
                    break
            prev = coef
    return lz.combine(coef)


def largest_eigenvalue(matvec, n: int, tol: float = 1e-13, max_steps: int = 300,
                       seed: int = 0) -> float:
    """lambda_max of a symmetric operator of side n by Lanczos from a deterministic random
    start, stopped when the largest Ritz value moves by less than tol (relative) between checks
    (it converges from below, fast when lambda_max is separated, as the NTK's is)."""
    lz = Lanczos(matvec, np.random.default_rng(seed).standard_normal((n, 1)))
    prev = None
    while lz.steps < min(n, max_steps):
        lz.step()
        if lz.steps % CHECK and lz.steps < min(n, max_steps) and lz.active.any():
            continue
        cur = lz.extremes()[0]
        if not lz.active.any() or (prev is not None and abs(cur - prev) <= tol * abs(cur)):
            break
        prev = cur
    return lz.extremes()[0]


def cg(matvec, b: np.ndarray, tol: float, max_steps: int = 0) -> np.ndarray:
    """G^{-1} b (columns solved together, each with its own step sizes) by conjugate gradients
    for symmetric positive-definite G, until ||r|| <= tol ||b|| per column (max_steps: 0 = 10 n).
    Raises RuntimeError when it does not converge."""
    b = np.asarray(b, float)
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = np.einsum("nk,nk->k", r, r)
    goal = (tol * np.linalg.norm(b, axis=0)) ** 2
    limit = max_steps or 10 * b.shape[0]
    for _ in range(limit):
        if np.all(rr <= goal):
            return x
        q = np.asarray(matvec(p), float)
        pq = np.einsum("nk,nk->k", p, q)
        step = np.where(rr > goal, rr / np.where(pq > 0, pq, 1.0), 0.0)
        x += step * p
        r -= step * q
        new = np.einsum("nk,nk->k", r, r)
        p = r + np.where(rr > 0, new / np.where(rr > 0, rr, 1.0), 0.0) * p
        rr = new
    if np.all(rr <= goal):
        return x
    raise RuntimeError(f"conjugate gradients did not reach the relative residual {tol:g} in "
                       f"{limit} steps")
