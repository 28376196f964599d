"""`ShardedOperator`: G and G' of one method on row-sharded kernels, applied to host vectors, and
the Cholesky helpers the operator builders share (`operators`, `kfac`)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import linalg as dense_linalg
from ..dynamics.base import step_size
from . import krylov, linalg
from .kernels import ShardedKernels


class ShardedOperator:
    """G and G' of one method on sharded kernels, applied to host vectors (N, k).

    kind: "isotropic" (G = alpha I exactly), "diagonal" (G = diag(diag)) or "symmetric" (applied
    by `train_apply`, inverted by `pinv_apply`). test_apply: G' v (N', k). Attributes mirror the
    dense `Operator` (name, alpha_theory, damping, conditions, notes, alpha, deviation, lr)."""

    is_sharded = True
    kron_outputs = True

    def __init__(self, name: str, kind: str, K: ShardedKernels, damping: float,
                 alpha_theory: Optional[float], conditions: dict, notes: tuple = (),
                 diag: Optional[np.ndarray] = None, train: Optional[Callable] = None,
                 test: Optional[Callable] = None, pinv: Optional[Callable] = None,
                 moments: Optional[Callable] = None):
        self.name, self.kind, self.damping = name, kind, float(damping)
        self.alpha_theory, self.conditions, self.notes = alpha_theory, conditions, tuple(notes)
        self.out_dim, self.n_train, self.n_test = K.out_dim, K.n_train, K.n_test
        self.compute_dtype = K.compute_dtype
        self.diag, self._train, self._test, self._pinv = diag, train, test, pinv
        self._moments = moments
        self._inverse_cheap = kind == "symmetric" and moments is not None   # gd: Cholesky solves
        self._memo: dict = {}

    @property
    def size(self) -> int:
        return self.n_train

    @property
    def has_test(self) -> bool:
        return self._test is not None

    def train_apply(self, v: np.ndarray) -> np.ndarray:
        """G v for host v (N, k)."""
        if self.diag is not None:
            return self.diag[:, None] * v
        return self._train(v)

    def test_apply(self, v: np.ndarray) -> np.ndarray:
        """G' v (N', k) for host v (N, k)."""
        if self._test is None:
            raise ValueError(f"operator {self.name!r} has no test operator: build the kernels "
                             "with x_test")
        return self._test(v)

    def pinv_apply(self, v: np.ndarray) -> np.ndarray:
        """G^{-1} v (symmetric kind; G positive definite)."""
        return self._pinv(v)

    def _memoized(self, key: str, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _moments_or_raise(self) -> tuple[float, float]:
        if self._moments is None:
            raise NotImplementedError(f"{self.name}: alpha and deviation of this sharded operator "
                                      "are not computed (they need the spectrum of every block)")
        return self._memoized("moments", self._moments)

    @property
    def alpha(self) -> float:
        """tr(G) / N (the dense Operator's measured alpha)."""
        if self.diag is not None:
            return float(self.diag[0]) if self.kind == "isotropic" else float(self.diag.mean())
        return self._moments_or_raise()[0] / self.n_train

    @property
    def deviation(self) -> float:
        """||G - alpha I||_F / ||alpha I||_F (exact: from tr G and ||G||_F^2, or the diagonal)."""
        a = self.alpha
        if self.diag is not None:
            dev = np.linalg.norm(self.diag - a) if self.kind == "diagonal" else 0.0
        else:
            tr, fro2 = self._moments_or_raise()
            dev = np.sqrt(max(fro2 - 2 * a * tr + a * a * self.n_train, 0.0))
        return float(dev / (abs(a) * np.sqrt(self.n_train))) if a != 0 else float("inf")

    @property
    def extremes(self) -> tuple[float, float]:
        """(lambda_max, lambda_min) of G: exact for isotropic and diagonal G; otherwise Lanczos
        on G for lambda_max (to 1e-13 relative) and on G^{-1} for lambda_min (to 1e-6), NaN
        where G^{-1} is not cheap (`lowest`)."""
        if self.diag is not None:
            return float(self.diag.max()), float(self.diag.min())
        return self.largest_eigenvalue, self.lowest(1e-6)

    def lowest(self, tol: float) -> float:
        """lambda_min of G by Lanczos on G^{-1} (Cholesky solves: gd) to `tol` relative; the
        estimate is >= lambda_min (Ritz values of G^{-1} lie below its largest eigenvalue). NaN
        where G^{-1} is not cheap (damped operators: conjugate gradients)."""
        if self.diag is not None:
            return float(self.diag.min())
        if not self._inverse_cheap:
            return float("nan")
        return self._memoized(f"lowest{tol!r}", lambda: 1.0 / krylov.largest_eigenvalue(
            self.pinv_apply, self.n_train, tol))

    @property
    def slowest_rate(self) -> float:
        """min Re(lambda) / max |lambda| over G's retained eigenvalues (modulus above 100 x
        rank_rtol x the largest, as the dense `Operator.slowest_rate`): positive iff the flow has
        a t -> infinity limit. Isotropic and diagonal G: exact from the diagonal. Symmetric G of
        gd (Theta / N, factored by Cholesky, so positive definite): lambda_min / lambda_max by
        Lanczos, lambda_max to 1e-13 and lambda_min on G^{-1} to 1e-10 relative (below the
        rank cut the value is lambda_min's, not the smallest retained one's: same sign). Damped
        operators (no cheap G^{-1}): NotImplementedError."""
        rtol = 100 * dense_linalg.rank_rtol(self.compute_dtype)
        if self.diag is not None:
            d = np.asarray(self.diag, float)
            top = float(np.max(np.abs(d))) if d.size else 0.0
            kept = d[np.abs(d) > rtol * top]
            return float(kept.min()) / top if kept.size else float("inf")
        if not self._inverse_cheap:
            raise NotImplementedError(f"{self.name}: slowest_rate of a damped sharded operator "
                                      "is not computed (use the dense path)")
        return self.lowest(1e-10) / self.largest_eigenvalue   # > 0: positive definite G

    @property
    def largest_eigenvalue(self) -> float:
        """lambda_max(G) (Lanczos to 1e-13 relative for symmetric G)."""
        if self.diag is not None:
            return float(self.diag.max())
        return self._memoized("largest", lambda: krylov.largest_eigenvalue(self.train_apply,
                                                                            self.n_train))

    @property
    def spectrum(self) -> np.ndarray:
        """The extreme eigenvalues (lambda_max, lambda_min), descending (not the full spectrum:
        that needs an N x N eigendecomposition; lambda_min is NaN where G^{-1} is not cheap)."""
        return np.array(self.extremes)

    @property
    def lr(self) -> float:
        """1/alpha for (nearly) isotropic G, else 1/lambda_max (the dense Operator's rule)."""
        known = self.diag is not None or self._moments is not None
        return step_size(self.name, known and self.deviation <= 1e-6, lambda: self.alpha,
                         lambda: self.largest_eigenvalue)

    def predict(self, f0_train: Any, y_train: Any, f0_test: Any = None, **kwargs):
        """`ntkngd.predict(self, ...)` (its hook calls this): `sharded.trajectory.predict`."""
        from .trajectory import predict
        return predict(self, f0_train, y_train, f0_test, **kwargs)

    def __repr__(self) -> str:
        return f"ShardedOperator({self.name!r}, kind={self.kind!r}, N={self.n_train})"


# ------------------------------------------------------------------------------------ helpers
def _pad(K: ShardedKernels, v: np.ndarray) -> np.ndarray:
    return linalg.pad_rows(np.asarray(v, K.compute_dtype), K.padded)


def _factor(K: ShardedKernels, key: str, matrix, shift: float = 0.0,
            temporary: bool = False) -> linalg.Factor:
    """Cached Cholesky factor of matrix() + shift I (key names it); temporary: matrix() builds a
    new array, factored in its own memory."""
    def compute():
        l, d = linalg.cholesky(matrix(), K.compute_dtype, shift, donate=temporary)
        return linalg.Factor(l, d, K.n_train)
    return K.cached(f"{key}@{shift!r}", compute)


def _require_pd(K, factors: dict, what: str) -> None:
    rtol = dense_linalg.rank_rtol(K.compute_dtype)
    bad = [name for name, f in factors.items() if not f.is_pd(rtol)]
    if bad:
        raise NotImplementedError(
            f"{what}: {', '.join(bad)} not numerically positive definite (condition number above "
            f"~1/{rtol:g}); the sharded backend solves positive-definite systems only. Use "
            "damping > 0 or the dense path (ntkngd.analytic_kernels without mesh), whose "
            "pseudo-inverse limit covers singular blocks")
