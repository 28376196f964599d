"""ntkngd: natural gradient descent with exact and approximate Fisher information in wide networks.

Names are imported on first use (PEP 562), so `import ntkngd` is fast and prints nothing; JAX and
neural-tangents load when a function that needs them is first read. `ntkngd.stax` is
neural-tangents' stax module loaded the quiet way (without its TensorFlow port), for
`ntkngd.serial(...)` stacks.
"""
from __future__ import annotations

from . import _lazy, _lazy_nt

_lazy_nt.install()

# public name -> (module, attribute in it); None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "TheoryConditionWarning": ("._checks", "TheoryConditionWarning"),
    "Operator": (".function_space", "Operator"),
    "Kernels": (".kernels", "Kernels"),
    "analytic_kernels": (".kernels", "analytic_kernels"),
    "METHODS": (".methods", "METHODS"),
    "BlockPattern": (".methods", "BlockPattern"),
    "block_pattern": (".methods", "block_pattern"),
    "Method": (".methods", "Method"),
    "get_method": (".methods", "get_method"),
    "method_names": (".methods", "method_names"),
    "pattern_method": (".methods", "pattern_method"),
    "register_method": (".methods", "register_method"),
    "losses": (".losses", None),
    "Loss": (".losses", "Loss"),
    "get_loss": (".losses", "get_loss"),
    "register_loss": (".losses", "register_loss"),
    "LossOperator": (".loss_dynamics", "LossOperator"),
    "pattern_alpha": (".methods.patterns", "alpha"),
    "tridiagonal_pattern": (".methods.patterns", "tridiagonal"),
    "ACTIVATIONS": (".network", "ACTIVATIONS"),
    "Network": (".network", "Network"),
    "mlp": (".network", "mlp"),
    "SerialNetwork": (".serial_network", "SerialNetwork"),
    "serial": (".serial_network", "serial"),
    "cnn": (".serial_network", "cnn"),
    "operator": (".operators", "operator"),
    "Trajectory": (".dynamics", "Trajectory"),
    "mse": (".dynamics", "mse"),
    "predict": (".dynamics", "predict"),
    "IsotropyReport": (".diagnostics", "IsotropyReport"),
    "isotropy": (".diagnostics", "isotropy"),
    "empirical_kernels": (".empirical", "empirical_kernels"),
    "TrainLog": (".train_log", "TrainLog"),
    "ngd_direction": (".engine", "ngd_direction"),
    "ngd_transform": (".engine", "ngd_transform"),
    "train": (".engine", "train"),
    "CEOperator": (".cross_entropy", "CEOperator"),
    "CETrajectory": (".cross_entropy", "CETrajectory"),
    "ce_operator": (".cross_entropy", "ce_operator"),
    "ce_predict": (".cross_entropy", "ce_predict"),
    "ce_residual": (".cross_entropy", "ce_residual"),
    "softmax_hessian": (".cross_entropy", "softmax_hessian"),
    "ce_min_norm_operator": (".cross_entropy", "ce_min_norm_operator"),
    "CETrainLog": (".train_log", "CETrainLog"),
    "ce_direction": (".ce_engine", "ce_direction"),
    "train_ce": (".ce_engine", "train_ce"),
    "data": (".data", None),
    "sharded": (".sharded", None),
    "stax": ("neural_tangents.stax", None),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = _lazy.lazy_exports(globals(), _EXPORTS)
