"""Function-space operators and dynamics: one operator family, one `predict`, one `Trajectory`.

    operator(method, kernels, damping, loss)            operators.py
        |-> Operator      linear flow, MSE: constant G, G'             linear.py
        `-> LossOperator  loss flow, any loss: G(f) x, x = H(f)^+ r    loss_flow.py
              (both `FlowOperator`s with one jit `Core`: base.py)
    predict(op, f0, y, f0_test, steps= | times=[..., inf]) -> Trajectory   predict.py
        closed forms and the t -> infinity fixed point (closed_form.py), diffrax flow and
        discrete map (flows.py)
    isotropy(op) -> IsotropyReport                                       diagnostics.py

Names load on first use (PEP 562); `ntkngd` re-exports the public ones.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, str]] = {
    "FlowOperator": (".base", "FlowOperator"),
    "Operator": (".linear", "Operator"),
    "FactoredMatrix": (".linear", "FactoredMatrix"),
    "dense": (".linear", "dense"),
    "LossOperator": (".loss_flow", "LossOperator"),
    "loss_operator": (".loss_flow", "loss_operator"),
    "min_norm_operator": (".loss_flow", "min_norm_operator"),
    "operator": (".operators", "operator"),
    "Trajectory": (".predict", "Trajectory"),
    "predict": (".predict", "predict"),
    "mse": (".predict", "mse"),
    "integrate_flow": (".flows", "integrate_flow"),
    "iterate_steps": (".flows", "iterate_steps"),
    "IsotropyReport": (".diagnostics", "IsotropyReport"),
    "isotropy": (".diagnostics", "isotropy"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
