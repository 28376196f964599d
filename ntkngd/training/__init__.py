"""Finite-width training: `train` (loop.py), one loop for every method, loss and network, over
the device step of `ntkngd.engine`; what it measures beside the steps (observers.py); the
`TrainLog` it returns (log.py). Names load on first use (PEP 562)."""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, str]] = {
    "train": (".loop", "train"),
    "TrainLog": (".log", "TrainLog"),
    "accuracy": (".observers", "accuracy"),
    "isotropy_fit": (".observers", "isotropy_fit"),
    "method_step": (".observers", "method_step"),
    "reference_alpha": (".observers", "reference_alpha"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
