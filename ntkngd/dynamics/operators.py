"""`operator(method, kernels, damping, loss)`: the function-space operator of any method."""
from __future__ import annotations

from typing import Optional, Union

from .. import _checks
from ..networks.kernels import Kernels
from ..losses import Loss, get_loss
from ..methods import BlockPattern, Method, get_method
from .linear import Operator
from .loss_flow import LossOperator, loss_operator


def operator(method: Union[str, BlockPattern, Method], kernels: Kernels,
             damping: Optional[float] = None,
             loss: Union[str, Loss] = "mse") -> Union[Operator, LossOperator]:
    """G, G', alpha (theory and measured) and lr for `method` (a registered name or alias,
    `ntkngd.block_pattern(S)` or a Method) on `kernels`. damping rho >= 0: F + rho I in parameter
    space (N rho I in the dual; factored sqrt(rho) for K-FAC), None the method's default.
    loss="mse": the constant `Operator` (linear flow); any other loss: the state-dependent G(f)
    (`LossOperator`, loss flow)."""
    if getattr(kernels, "is_sharded", False):   # hook: sharded backend (ntkngd.sharded)
        from ..sharded.operators import operator as sharded_operator
        return sharded_operator(method, kernels, damping, loss)
    if not isinstance(kernels, Kernels):
        raise TypeError(f"kernels must be an ntkngd.Kernels (from analytic_kernels or "
                        f"empirical_kernels), got {type(kernels).__name__}")
    m, L = get_method(method), get_loss(loss)
    if damping is None:
        damping = float(m.resolve_damping(kernels, None))
    damping = _checks.non_negative(damping, "damping")
    if not L.identity_hessian:
        return loss_operator(m, kernels, damping, L)
    return m.operator(kernels, damping)
