"""`isotropy` for sharded operators: the dense report's numbers without an N x N matrix.

alpha = tr(G) / N and deviation ||G - alpha I||_F / ||alpha I||_F are exact (from tr G and
||G||_F^2 of the sharded total NTK for gd, from the diagonal otherwise); `spectrum` holds only
the extreme eigenvalues (lambda_max, lambda_min) (ShardedOperator.extremes), so
condition_number = lambda_max / lambda_min.
"""
from __future__ import annotations

import numpy as np

from ..diagnostics import IsotropyReport
from .operators import ShardedOperator


def isotropy(op: ShardedOperator) -> IsotropyReport:
    """How close G is to alpha I (module docstring), as the dense `ntkngd.isotropy` reports it."""
    if not isinstance(op, ShardedOperator):
        raise TypeError(f"isotropy needs a ShardedOperator, got {type(op).__name__}")
    spec = op.spectrum
    err = None
    if op.alpha_theory is not None:
        err = abs(op.alpha - op.alpha_theory) / abs(op.alpha_theory)
    lo = spec[-1]
    cond = float(spec[0] / lo) if lo > 0 else float("inf")
    return IsotropyReport(op.name, op.alpha, op.alpha_theory, err, op.deviation, spec, cond,
                          dict(op.conditions), tuple(op.notes), float(op.damping))
