"""`operator(method, kernels, damping)`: the function-space operator of any method."""
from __future__ import annotations

from typing import Union

from . import _checks
from .function_space import Operator
from .kernels import Kernels
from .methods import OPERATORS, BlockPattern, canonical
from .methods.block import pattern_operator


def operator(method: Union[str, BlockPattern], kernels: Kernels,
             damping: float | None = None) -> Operator:
    """G, G', alpha (theory and measured) and lr for `method` on `kernels`.

    method: "gd", "exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise" (aliases
    "bd", "btd", "ngd") or `ntkngd.block_pattern(S)`. damping rho >= 0 is added to the Fisher in
    parameter space (F + rho I; N rho I in the dual space; factored sqrt(rho) for K-FAC);
    None (the default) picks the method's default (unit-wise on finite-width kernels:
    `methods.unitwise.default_damping`; 0 otherwise).
    """
    if not isinstance(kernels, Kernels):
        raise TypeError(f"kernels must be an ntkngd.Kernels (from analytic_kernels or "
                        f"empirical_kernels), got {type(kernels).__name__}")
    if damping is None:   # per-method default: 0, except unit-wise on finite-width kernels
        from .methods.unitwise import default_damping
        unit = not isinstance(method, BlockPattern) and canonical(method) == "unit_wise"
        damping = default_damping(kernels) if unit and not kernels.kron_outputs else 0.0
    damping = _checks.non_negative(damping, "damping")
    if isinstance(method, BlockPattern):
        return pattern_operator(kernels, method, damping)
    return OPERATORS[canonical(method)](kernels, damping)
