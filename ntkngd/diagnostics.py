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


def isotropy(op: Operator) -> IsotropyReport:
    """How close G is to alpha I, and which conditions of the theory hold."""
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
