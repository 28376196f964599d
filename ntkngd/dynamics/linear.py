"""The linear flow (MSE) member of the operator family: one step changes the outputs by
Delta f(X) = -lr G g, Delta f(X') = -lr G' g, g = f(X) - Y, with G (m x m; m = N at infinite width,
G (x) I_C, or N C sample-major) and G' (m' x m). Isotropic G = alpha I: lr = 1/alpha, one step."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional, Union

import numpy as np

from .base import Core, FlowOperator, step_size

# Side m above which the largest eigenvalue (for lr) comes from Lanczos instead of a full eigvalsh.
LANCZOS_MIN_SIZE = 256


class FactoredMatrix:
    """A matrix kept as its factors (e.g. G' = sum_l c_l Theta_l(X', X) Theta_l^{-1}): `a @ x`
    applies them without forming `a`; `np.asarray(a)` (or `dense(a)`) forms it once and caches it."""

    def __init__(self, shape: tuple, dtype: Any, apply: Callable[[np.ndarray], np.ndarray],
                 materialize: Callable[[], np.ndarray]):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._apply = apply
        self._materialize = materialize
        self._dense: Optional[np.ndarray] = None

    ndim = 2

    def __matmul__(self, x) -> np.ndarray:
        if self._dense is not None:
            return self._dense @ x
        x = np.asarray(x)
        vec = x.ndim == 1
        out = np.asarray(self._apply(x[:, None] if vec else x))
        return out[:, 0] if vec else out

    def __mul__(self, scale):
        if np.ndim(scale) == 0:   # lazily scaled: (s G') @ x = s (G' @ x)
            return FactoredMatrix(self.shape, self.dtype, lambda x: scale * (self @ x),
                                  lambda: scale * np.asarray(self))
        return np.asarray(self) * scale

    __rmul__ = __mul__

    def __truediv__(self, scale):
        return self * (1.0 / scale) if np.ndim(scale) == 0 else np.asarray(self) / scale

    def __neg__(self):
        return self * -1.0

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str):
        """Any other array attribute (T, sum, reshape, ...) of the formed matrix."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self._dense is None:
            self._dense = np.asarray(self._materialize())
        return self._dense if dtype is None else self._dense.astype(dtype)

    def __jax_array__(self):
        import jax.numpy as jnp
        return jnp.asarray(self.__array__())

    def __repr__(self) -> str:
        state = "formed" if self._dense is not None else "factored"
        return f"FactoredMatrix(shape={self.shape}, dtype={self.dtype}, {state})"


for _name in ("__rmatmul__", "__add__", "__radd__", "__sub__", "__rsub__", "__getitem__"):
    # the remaining array operations act on the formed matrix
    setattr(FactoredMatrix, _name, lambda self, other, _name=_name:
            getattr(np.asarray(self), _name)(other))

MatrixLike = Union[np.ndarray, FactoredMatrix]


def is_diagonal(a: np.ndarray) -> bool:
    """Whether every off-diagonal entry of the square matrix a is exactly zero (strided view: row i
    holds the m entries between diagonal entries i and i + 1)."""
    a = np.ascontiguousarray(a)
    m = a.shape[0]
    return m < 2 or not np.any(a.reshape(-1)[1:].reshape(m - 1, m + 1)[:, :m])


def dense(a: Optional[MatrixLike]) -> Optional[np.ndarray]:
    """The dense array of a matrix or `FactoredMatrix` (None stays None)."""
    return None if a is None else np.asarray(a)


@dataclass(frozen=True)
class Operator(FlowOperator):
    """G, G', the alpha theory predicts (None when it predicts no isotropy) and what was measured.

    test:       G' as an array or a `FactoredMatrix` (applied by solves; `np.asarray` forms it).
    conditions: each condition of the theory by name -> whether it holds here.
    notes:      human-readable remarks (failed conditions, conventions used).
    """

    name: str
    train: np.ndarray
    test: Optional[MatrixLike]
    alpha_theory: Optional[float]
    damping: float
    out_dim: int
    kron_outputs: bool
    conditions: dict = field(default_factory=dict)
    notes: tuple = ()

    replace = dataclasses.replace
    linear = True

    @property
    def loss(self):
        """The loss of the linear flow: `ntkngd.losses.mse` (H = I)."""
        from ..losses import mse
        return mse

    @property
    def n_train(self) -> int:
        """N, the number of training points."""
        return self.train.shape[0] // (1 if self.kron_outputs else self.out_dim)

    @property
    def n_test(self) -> int:
        """N', the number of test points (0 without a test operator)."""
        return 0 if self.test is None else \
            self.test.shape[0] // (1 if self.kron_outputs else self.out_dim)

    def core(self) -> Core:
        """The jit core of the linear flow: (G g, G' g) with g = f - y (`ntkngd.dynamics.flows`)."""
        import jax.numpy as jnp
        train = jnp.asarray(self.train)
        return Core(train, None if self.test is None else jnp.asarray(self.test), None,
                    jnp.zeros((), train.dtype), "pinv", bool(self.kron_outputs), self.loss)

    @property
    def size(self) -> int:
        """m, the side of G (N at infinite width, N C at finite width)."""
        return int(self.train.shape[0])

    @cached_property
    def alpha(self) -> float:
        """Measured alpha = tr(G) / m (best isotropic fit in Frobenius norm); c itself for G stored
        as c I (`is_scaled_identity`), where summing m copies of c would round."""
        if self.is_scaled_identity:
            return float(self.train.flat[0]) if self.size else 0.0
        return float(np.trace(self.train) / self.size)

    @cached_property
    def is_scaled_identity(self) -> bool:
        """Whether G is stored as c I (e.g. the rho -> 0 pattern operator with positive-definite
        blocks): exact comparisons of stored values, not of computed results."""
        if not self.is_diagonal:
            return False
        diag = np.diagonal(self.train)
        return bool(np.all(diag == diag[:1]))

    @cached_property
    def is_diagonal(self) -> bool:
        """Whether every off-diagonal entry of G is exactly zero (e.g. K-FAC with a rank-deficient
        first layer): the dynamics then act sample by sample."""
        return is_diagonal(self.train)

    @cached_property
    def is_symmetric(self) -> bool:
        """Whether G = G^T to 1e-10 relative (then eigh, else eig, decomposes it)."""
        if self.is_diagonal:
            return True
        g = self.train
        return bool(np.linalg.norm(g - g.T) <= 1e-10 * max(np.linalg.norm(g), 1e-300))

    @cached_property
    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """(eigenvalues, eigenvectors) of G, computed once: eigh if symmetric, else eig."""
        if self.is_symmetric:
            return np.linalg.eigh(0.5 * (self.train + self.train.T))
        return np.linalg.eig(self.train)

    @cached_property
    def spectrum(self) -> np.ndarray:
        """Eigenvalues of G, descending (real parts when G is not symmetric)."""
        if self.deviation == 0.0:
            return np.full(self.size, self.alpha)
        if self.is_diagonal:
            return np.sort(np.diagonal(self.train))[::-1]
        if self.is_symmetric and "eig" not in self.__dict__:
            return np.linalg.eigvalsh(0.5 * (self.train + self.train.T))[::-1]
        return np.sort(np.real(self.eig[0]))[::-1]

    @cached_property
    def schur(self) -> tuple[np.ndarray, np.ndarray, int, float]:
        """(T, Q, k, top): real Schur form G = Q T Q^T (float64) whose k leading eigenvalues have
        modulus above 100 x `linalg.rank_rtol` (dtype of G) x the largest modulus `top` (1e-8 in
        float64: above the eigenvalue errors of a non-normal G; docs/theory.md, fixed point)."""
        from scipy.linalg import schur
        from ..linalg import rank_rtol
        g = np.asarray(self.train, float)
        top = float(np.max(np.abs(np.linalg.eigvals(g)))) if self.size else 0.0
        cut = 100 * rank_rtol(np.asarray(self.train).dtype) * top
        t, q, k = schur(g, output="real", sort=lambda re, im: np.hypot(re, im) > cut)
        return t, q, int(k), top

    @cached_property
    def slowest_rate(self) -> float:
        """min Re(lambda) / max |lambda| over G's retained eigenvalues (`schur`): > 0 iff the flow
        has a t -> infinity limit; inf when no mode is retained (G = 0)."""
        t, _, k, top = self.schur
        if k == 0:
            return float("inf")
        return float(np.min(np.linalg.eigvals(t[:k, :k]).real)) / top

    @cached_property
    def largest_eigenvalue(self) -> float:
        """lambda_max(G) (real part for non-symmetric G); Lanczos (ARPACK, tol 0, fixed start
        vector) for symmetric G of side >= LANCZOS_MIN_SIZE."""
        if "spectrum" in self.__dict__ or self.is_diagonal or not self.is_symmetric or \
                self.size < LANCZOS_MIN_SIZE:
            return float(self.spectrum[0])
        from scipy.sparse.linalg import ArpackError, eigsh
        g = 0.5 * (self.train + self.train.T)
        try:
            lam = eigsh(g, k=1, which="LA", tol=0, v0=np.ones(self.size, g.dtype),
                        return_eigenvectors=False)
        except ArpackError:   # pragma: no cover - no convergence: fall back to the full spectrum
            return float(self.spectrum[0])
        return float(lam[0])

    @cached_property
    def deviation(self) -> float:
        """||G - alpha I||_F / ||alpha I||_F with the measured alpha."""
        a = self.alpha
        if self.is_diagonal:
            dev = np.linalg.norm(np.diagonal(self.train) - a)
        else:   # G - a I without forming I: the same entries, the same norm
            shifted = np.array(self.train, copy=True)
            shifted.flat[::self.size + 1] -= a
            dev = np.linalg.norm(shifted)
        return float(dev / (abs(a) * np.sqrt(self.size))) if a != 0 else float("inf")

    @cached_property
    def lr(self) -> float:
        """Step size 1/alpha for (nearly) isotropic G; 1/lambda_max(G) otherwise, the largest step
        that overshoots no mode."""
        return step_size(self.name, self.deviation <= 1e-6, lambda: self.alpha,
                         lambda: self.largest_eigenvalue)
