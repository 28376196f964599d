"""Isotropy diagnostics of a function-space operator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .function_space import Operator


@dataclass(frozen=True)
class IsotropyReport:
    """alpha: measured tr(G)/m; deviation: ||G - alpha I||_F / ||alpha I||_F; spectrum: eigenvalues
    of G (descending); conditions: each condition of the theory -> holds?; alpha_error: relative
    gap between measured and predicted alpha (None when theory predicts no alpha)."""

    method: str
    alpha: float
    alpha_theory: Optional[float]
    alpha_error: Optional[float]
    deviation: float
    spectrum: np.ndarray
    condition_number: float
    conditions: dict
    notes: tuple

    @property
    def isotropic(self) -> bool:
        return self.deviation < 1e-6

    def summary(self) -> str:
        pred = "-" if self.alpha_theory is None else f"{self.alpha_theory:.6g}"
        failed = [k for k, v in self.conditions.items() if not v]
        return (f"{self.method:>18s}  alpha measured {self.alpha:.6g}  predicted {pred}  "
                f"deviation {self.deviation:.2e}  cond {self.condition_number:.3g}"
                + (f"  failing: {', '.join(failed)}" if failed else ""))


def _constant_part(op) -> Operator:
    """A LossOperator whose G(f) = M H(f)^+ (GD, rho -> 0 patterns) -> an Operator of M restricted
    to range(H) (U^T M U, U = I_N (x) U_C at finite width): isotropic M means the step is
    alpha H^+ r for every f."""
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
    from .loss_dynamics import LossOperator
    if isinstance(op, LossOperator):
        op = _constant_part(op)
    if not isinstance(op, Operator):
        raise TypeError(f"isotropy needs an ntkngd Operator, got {type(op).__name__}")
    spec = op.spectrum
    err = None
    if op.alpha_theory is not None:
        err = abs(op.alpha - op.alpha_theory) / abs(op.alpha_theory)
    lo = spec[-1]
    cond = float(spec[0] / lo) if lo > 0 else float("inf")
    return IsotropyReport(op.name, op.alpha, op.alpha_theory, err, op.deviation, spec, cond,
                          dict(op.conditions), tuple(op.notes))
