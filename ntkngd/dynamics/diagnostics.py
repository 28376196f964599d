"""Isotropy diagnostics of a function-space operator: how close G is to alpha I, and which
conditions of the theory (docs/theory.md) hold, in words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .linear import Operator
from .loss_flow import LossOperator

# condition name (as the methods report it) -> what it means when it FAILS, in words
_FAILING = {
    "1 in range(S)": "the all-ones vector is not in the range of the block pattern S, so no "
                     "isotropic undamped update exists",
    "every NTK block invertible": "an NTK block Theta_l is singular (more points than the layer "
                                  "can separate); its pseudo-inverse limit is used",
    "N <= d (first-layer input Gram invertible)": "more training points than input dimensions "
                                                  "(N > d): the first-layer input Gram is singular",
    "every forward Gram invertible": "a layer-input (forward) Gram Q_l is singular",
    "N C <= width (backward Grams invertible)": "a backward Gram is singular (N C > width)",
    "C == 1": "several outputs (C > 1): the finite-width alpha is not the one-output count",
    "infinite width (M -> infinity)": "isotropy of unit-wise NGD holds only as the width grows; "
                                      "this is the infinite-width value, not a finite network",
}


@dataclass(frozen=True)
class IsotropyReport:
    """alpha: measured tr(G)/m; deviation: ||G - alpha I||_F / ||alpha I||_F; spectrum: G's
    eigenvalues (descending); alpha_error: |alpha - alpha_theory| / |alpha_theory| (None without a
    prediction); conditions: the theory's, by name -> holds; notes, damping: the operator's."""

    method: str
    alpha: float
    alpha_theory: Optional[float]
    alpha_error: Optional[float]
    deviation: float
    spectrum: np.ndarray
    condition_number: float
    conditions: dict
    notes: tuple
    damping: float = 0.0

    @property
    def isotropic(self) -> bool:
        """Whether G = alpha I to 1e-6 (relative Frobenius deviation)."""
        return self.deviation < 1e-6

    @property
    def failing(self) -> list[str]:
        """The theory's conditions that do not hold, in words (damping is reported separately:
        it is a choice, not a failure)."""
        return [_FAILING.get(k, f"condition not met: {k}") for k, v in self.conditions.items()
                if not v and k != "damping == 0"]

    def summary(self) -> str:
        """One headline line (alpha measured and predicted, deviation from isotropy, condition
        number of G), then one line per failing condition, the damping if any, and the notes."""
        pred = "-" if self.alpha_theory is None else f"{self.alpha_theory:.6g}"
        lines = [f"{self.method:>18s}  alpha measured {self.alpha:.6g}  predicted {pred}  "
                 f"deviation {self.deviation:.2e}  cond {self.condition_number:.3g}"]
        pad = " " * 20
        if self.damping > 0:
            lines.append(f"{pad}damped (rho = {self.damping:.3g}): the theory's alpha is the "
                         f"rho -> 0 constant, so no alpha is predicted for this operator")
        lines += [f"{pad}failing: {phrase}" for phrase in self.failing]
        lines += [f"{pad}note: {note}" for note in self.notes]
        return "\n".join(lines)


def _constant_part(op) -> Operator:
    """LossOperator with G(f) = M H(f)^+ (GD, rho -> 0) -> Operator of M on range(H) (U^T M U,
    U = I_N (x) U_C at finite width): isotropic M means the step is alpha H^+ r for every f."""
    if op.kind not in ("gd", "pinv"):
        raise ValueError(f"isotropy: the damped {op.loss.name} operator of {op.name!r} depends on "
                         "the outputs f through the damped solve; use damping = 0 (the "
                         "minimum-norm limit, G(f) = alpha H^+ on the training points)")
    train = np.asarray(op.train, np.float64)
    if not op.kron:
        u = np.kron(np.eye(op.n_train), np.asarray(op.loss.basis(op.out_dim), float))
        train = u.T @ train @ u
    return Operator(op.name, train, None, op.alpha, op.damping, op.out_dim, op.kron, {},
                    op.notes + (f"{op.loss.name}: G(f) = M H(f)^+; reported: M on range(H)",))


def isotropy(op) -> IsotropyReport:
    """How close G is to alpha I, and which conditions of the theory hold. A LossOperator
    (loss != mse) is judged by its constant factor M in G(f) = M H(f)^+."""
    if isinstance(op, LossOperator):
        op = _constant_part(op)
    # hook: a sharded operator (ntkngd.sharded) has the same attributes (spectrum: its extremes)
    if not isinstance(op, Operator) and not getattr(op, "is_sharded", False):
        raise TypeError(f"isotropy needs an ntkngd Operator, got {type(op).__name__}")
    spec, theory = op.spectrum, op.alpha_theory
    err = None if theory is None else abs(op.alpha - theory) / abs(theory)
    cond = float(spec[0] / spec[-1]) if spec[-1] > 0 else float("inf")
    return IsotropyReport(op.name, op.alpha, theory, err, op.deviation, spec, cond,
                          dict(op.conditions), tuple(op.notes), float(op.damping))
