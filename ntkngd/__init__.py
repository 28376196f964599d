"""ntkngd: natural gradient descent with exact and approximate Fisher information in wide networks.

Names are imported on first use (PEP 562), so `import ntkngd` is fast and prints nothing; JAX and
neural-tangents load when a function that needs them is first read. `ntkngd.stax` is
neural-tangents' stax module loaded the quiet way (without its TensorFlow port), for
`ntkngd.serial(...)` stacks. The v0.1 names (`ce_operator`, `train_ce`, `mse`, ...) live in
`ntkngd.compat`; reading one here warns once (DeprecationWarning) with its replacement.
"""
from __future__ import annotations

from . import _lazy, _lazy_nt
from ._names import COMPAT_NAMES as _COMPAT

_lazy_nt.install()

# public name -> (module, attribute in it); None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {name: (module, name) for module, names in (
    ("._checks", ("TheoryConditionWarning",)),
    (".networks.base", ("Network",)),                                    # networks, kernels
    (".networks.fully_connected", ("ACTIVATIONS", "mlp")),
    (".networks.stax_serial", ("SerialNetwork", "serial", "cnn")),
    (".networks.kernels", ("Kernels", "analytic_kernels")),
    (".networks.empirical", ("empirical_kernels",)),
    (".methods", ("METHODS", "BlockPattern", "block_pattern", "Method", "get_method",
                  "method_names", "pattern_method", "register_method")),
    (".losses", ("Loss", "get_loss", "register_loss")),
    (".dynamics.linear", ("Operator",)),                                 # function space
    (".dynamics.loss_flow", ("LossOperator",)),
    (".dynamics.operators", ("operator",)),
    (".dynamics.trajectory", ("Trajectory", "predict")),
    (".dynamics.diagnostics", ("IsotropyReport", "isotropy")),
    (".engine", ("ngd_direction", "ngd_transform")),                     # finite width
    (".training.loop", ("train",)),
    (".training.log", ("TrainLog",))) for name in names}
_EXPORTS.update({"pattern_alpha": (".methods.patterns", "alpha"),
                 "tridiagonal_pattern": (".methods.patterns", "tridiagonal"),
                 "stax": ("neural_tangents.stax", None), "losses": (".losses", None),
                 "data": (".data", None), "sharded": (".sharded", None)})

__all__ = sorted(_EXPORTS)

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
