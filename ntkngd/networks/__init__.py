"""Networks: one protocol (base.Network: per-layer patches and backprops with a positions axis,
analytic blocks, the parameter mapping, one jittable check) and its two implementations, the
closed-form MLP (fully_connected.py) and any stax serial stack (stax_serial.py); the `Kernels`
container and its analytic (kernels.py) and empirical (empirical.py) constructors. Names load on
first use."""
from __future__ import annotations

from .. import _lazy

_EXPORTS = {
    "Network": (".base", "Network"),
    "MLP": (".fully_connected", "MLP"),
    "mlp": (".fully_connected", "mlp"),
    "ACTIVATIONS": (".fully_connected", "ACTIVATIONS"),
    "SerialNetwork": (".stax_serial", "SerialNetwork"),
    "serial": (".stax_serial", "serial"),
    "cnn": (".stax_serial", "cnn"),
    "Kernels": (".kernels", "Kernels"),
    "analytic_kernels": (".kernels", "analytic_kernels"),
    "empirical_kernels": (".empirical", "empirical_kernels"),
    "kernels_and_outputs": (".empirical", "kernels_and_outputs"),
    "outputs": (".empirical", "outputs"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy.lazy_exports(globals(), _EXPORTS)
