"""The function-space operator of one preconditioner: one step changes the outputs by

    Delta f(X) = -lr * G g,     Delta f(X') = -lr * G' g,     g = f(X) - Y,

with G (m x m) on the training points and G' (m' x m) from training to test points, m = N (infinite
width: the full operator is G (x) I_C) or N C (finite width, sample-major). Isotropic means
G = alpha I; then lr = 1/alpha converges in one step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Operator:
    """G, G', the alpha theory predicts (None when it predicts no isotropy) and what was measured.

    conditions: each condition of the theory by name -> whether it holds here.
    notes:      human-readable remarks (failed conditions, conventions used).
    """

    name: str
    train: np.ndarray
    test: Optional[np.ndarray]
    alpha_theory: Optional[float]
    damping: float
    out_dim: int
    kron_outputs: bool
    conditions: dict = field(default_factory=dict)
    notes: tuple = ()

    replace = dataclasses.replace

    @property
    def n_train(self) -> int:
        """N, the number of training points."""
        return self.train.shape[0] // (1 if self.kron_outputs else self.out_dim)

    @property
    def size(self) -> int:
        """m, the side of G (N at infinite width, N C at finite width)."""
        return int(self.train.shape[0])

    @cached_property
    def alpha(self) -> float:
        """Measured alpha = tr(G) / m (the best isotropic fit alpha I in Frobenius norm)."""
        return float(np.trace(self.train) / self.size)

    @cached_property
    def is_symmetric(self) -> bool:
        """Whether G = G^T to 1e-10 relative (then eigh, else eig, decomposes it)."""
        g = self.train
        return bool(np.linalg.norm(g - g.T) <= 1e-10 * max(np.linalg.norm(g), 1e-300))

    @cached_property
    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigen-decomposition (eigenvalues, eigenvectors) of G, computed once: eigh when G is
        symmetric, eig (complex) otherwise."""
        if self.is_symmetric:
            return np.linalg.eigh(0.5 * (self.train + self.train.T))
        return np.linalg.eig(self.train)

    @cached_property
    def spectrum(self) -> np.ndarray:
        """Eigenvalues of G, descending (real parts when G is not symmetric)."""
        return np.sort(np.real(self.eig[0]))[::-1]

    @cached_property
    def deviation(self) -> float:
        """||G - alpha I||_F / ||alpha I||_F with the measured alpha."""
        a = self.alpha
        dev = np.linalg.norm(self.train - a * np.eye(self.size))
        return float(dev / (abs(a) * np.sqrt(self.size))) if a != 0 else float("inf")

    @cached_property
    def lr(self) -> float:
        """Step size 1/alpha for (nearly) isotropic G; 1/lambda_max(G) otherwise (GD, K-FAC with
        d < N, ...), the largest step that does not overshoot any mode."""
        if self.deviation <= 1e-6:
            return 1.0 / self.alpha
        lam = float(self.spectrum[0])
        if lam <= 0:
            raise ValueError(f"operator {self.name!r} has no positive eigenvalue; no learning rate")
        return 1.0 / lam
