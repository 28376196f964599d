"""ntkngd: natural gradient descent with exact and approximate Fisher information in wide networks.

Names are imported on first use (PEP 562), so `import ntkngd` is fast and prints nothing; JAX and
neural-tangents load when a function that needs them is first read. `ntkngd.stax` is
neural-tangents' stax module loaded the quiet way (without its TensorFlow port), for
`ntkngd.serial(...)` stacks. The v0.1 names (`ce_operator`, `train_ce`, `mse`, ...) live in
`ntkngd.compat`; reading one here warns once (DeprecationWarning) with its replacement.
"""
from __future__ import annotations

from . import _lazy, _lazy_nt

_lazy_nt.install()

# public name -> (module, attribute in it); None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "TheoryConditionWarning": ("._checks", "TheoryConditionWarning"),
    # networks
    "ACTIVATIONS": (".networks.fully_connected", "ACTIVATIONS"),
    "Network": (".networks.base", "Network"),
    "mlp": (".networks.fully_connected", "mlp"),
    "SerialNetwork": (".networks.stax_serial", "SerialNetwork"),
    "serial": (".networks.stax_serial", "serial"),
    "cnn": (".networks.stax_serial", "cnn"),
    "stax": ("neural_tangents.stax", None),
    # kernels
    "Kernels": (".networks.kernels", "Kernels"),
    "analytic_kernels": (".networks.kernels", "analytic_kernels"),
    "empirical_kernels": (".networks.empirical", "empirical_kernels"),
    # methods
    "METHODS": (".methods", "METHODS"),
    "BlockPattern": (".methods", "BlockPattern"),
    "block_pattern": (".methods", "block_pattern"),
    "Method": (".methods", "Method"),
    "get_method": (".methods", "get_method"),
    "method_names": (".methods", "method_names"),
    "pattern_method": (".methods", "pattern_method"),
    "register_method": (".methods", "register_method"),
    "pattern_alpha": (".methods.patterns", "alpha"),
    "tridiagonal_pattern": (".methods.patterns", "tridiagonal"),
    # losses
    "losses": (".losses", None),
    "Loss": (".losses", "Loss"),
    "get_loss": (".losses", "get_loss"),
    "register_loss": (".losses", "register_loss"),
    # function-space operators and dynamics
    "Operator": (".dynamics.linear", "Operator"),
    "LossOperator": (".dynamics.loss_flow", "LossOperator"),
    "operator": (".dynamics.operators", "operator"),
    "Trajectory": (".dynamics.trajectory", "Trajectory"),
    "predict": (".dynamics.trajectory", "predict"),
    "IsotropyReport": (".dynamics.diagnostics", "IsotropyReport"),
    "isotropy": (".dynamics.diagnostics", "isotropy"),
    # finite-width training
    "ngd_direction": (".engine", "ngd_direction"),
    "ngd_transform": (".engine", "ngd_transform"),
    "train": (".training.loop", "train"),
    "TrainLog": (".training.log", "TrainLog"),
    # data
    "data": (".data", None),
    "sharded": (".sharded", None),
}

__all__ = sorted(_EXPORTS)

# the v0.1 names (ntkngd.compat.NAMES, listed here so that looking one up imports nothing)
_COMPAT = frozenset(("ce_operator", "ce_min_norm_operator", "ce_predict", "ce_residual",
                     "softmax_hessian", "CEOperator", "CETrajectory", "CETrainLog", "ce_direction",
                     "train_ce", "mse"))
_lazy_getattr, __dir__ = _lazy.lazy_exports(globals(), _EXPORTS)


def __getattr__(name: str):
    """Public names on first use; a v0.1 name warns once (DeprecationWarning), then is cached."""
    if name in _COMPAT:
        import importlib
        import warnings
        compat = importlib.import_module(".compat", __name__)
        warnings.warn(f"ntkngd.{name} is a v0.1 name, kept in ntkngd.compat; use "
                      f"{compat.NAMES[name]}", DeprecationWarning, stacklevel=2)
        globals()[name] = value = getattr(compat, name)
        return value
    return _lazy_getattr(name)
