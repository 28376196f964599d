"""The built-in method and loss names and the v0.1 names (`ntkngd.compat`) as plain strings: what
the command line lists and accepts, and `ntkngd` looks up, without importing JAX (`ntkngd --help`
and argument errors answer at once). tests/test_startup.py checks them against the registries."""
from __future__ import annotations

import sys

METHODS: tuple[str, ...] = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac",
                            "unit_wise", "diagonal", "ekfac", "shampoo")
METHOD_ALIASES: dict[str, str] = {"bd": "block_diagonal", "btd": "block_tridiagonal",
                                  "ngd": "exact", "k-fac": "kfac", "unitwise": "unit_wise",
                                  "diag": "diagonal", "e-kfac": "ekfac"}
LOSSES: tuple[str, ...] = ("mse", "sigmoid_binary_cross_entropy", "softmax_cross_entropy")
LOSS_ALIASES: dict[str, str] = {"ce": "softmax_cross_entropy",
                                "cross_entropy": "softmax_cross_entropy",
                                "bce": "sigmoid_binary_cross_entropy"}

COMPAT_NAMES: dict[str, str] = {     # v0.1 name -> what to use instead (the warning's text)
    "ce_operator": "ntkngd.operator(method, K, damping, loss='ce')",
    "ce_min_norm_operator": "ntkngd.operator(method, K, 0.0, loss='ce')",
    "ce_predict": "ntkngd.predict(ntkngd.operator(..., loss='ce'), ...)",
    "ce_residual": "ntkngd.losses.softmax_cross_entropy.residual",
    "softmax_hessian": "ntkngd.losses.softmax_cross_entropy.hessian",
    "CEOperator": "ntkngd.LossOperator", "CETrajectory": "ntkngd.Trajectory",
    "CETrainLog": "ntkngd.TrainLog",
    "ce_direction": "ntkngd.ngd_direction(..., loss='ce')",
    "train_ce": "ntkngd.train(..., loss='ce')",
    "mse": "ntkngd.losses.mse.value (or ntkngd.dynamics.trajectory.mse, in NumPy)",
}


def method_names() -> tuple[str, ...]:
    """Registered method names: the registry's when it is loaded (a plugin may have added some),
    else the built-in ones."""
    if "ntkngd.methods" in sys.modules:
        return sys.modules["ntkngd.methods"].method_names()
    return METHODS


def canonical_method(name: str) -> str:
    """The canonical name of a method name or alias; the registry decides for anything that is
    not a built-in name (importing it, and JAX, only then)."""
    key = str(name).lower()
    key = METHOD_ALIASES.get(key, key)
    if key in METHODS and "ntkngd.methods" not in sys.modules:
        return key
    from .methods import canonical
    return canonical(name)


def loss_names() -> tuple[str, ...]:
    """Registered loss names: the registry's when loaded, else the built-in ones (sorted)."""
    if "ntkngd.losses" in sys.modules:
        return tuple(sorted(sys.modules["ntkngd.losses"].LOSSES))
    return LOSSES
