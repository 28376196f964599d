"""The v0.1 names (softmax cross-entropy beside MSE), kept working on top of the one engine.

Reading one of `NAMES` as `ntkngd.<name>` warns once per name with a DeprecationWarning that names
its replacement (ntkngd/__init__.py); importing it from here does not warn. The loss is
`ntkngd.losses.softmax_cross_entropy` (C >= 2, one-hot targets, Loss = (1/N) sum_n -sum_c y_nc
log softmax(f_n)_c, residual r = p - y, output Hessian Hs = diag(p) - p p^T).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp

from . import _checks
from .dynamics.loss_flow import LossOperator, loss_operator, min_norm_operator
from .dynamics.trajectory import Trajectory, mse, predict
from .networks.kernels import Kernels
from .losses import Loss, get_loss, softmax_cross_entropy
from .methods import BlockPattern, get_method
from .training.log import TrainLog

# v0.1 name -> what to use instead (the DeprecationWarning's text)
NAMES: dict[str, str] = {
    "ce_operator": "ntkngd.operator(method, K, damping, loss='ce')",
    "ce_min_norm_operator": "ntkngd.operator(method, K, 0.0, loss='ce')",
    "ce_predict": "ntkngd.predict(ntkngd.operator(..., loss='ce'), ...)",
    "ce_residual": "ntkngd.losses.softmax_cross_entropy.residual",
    "softmax_hessian": "ntkngd.losses.softmax_cross_entropy.hessian",
    "CEOperator": "ntkngd.LossOperator",
    "CETrajectory": "ntkngd.Trajectory",
    "CETrainLog": "ntkngd.TrainLog",
    "ce_direction": "ntkngd.ngd_direction(..., loss='ce')",
    "train_ce": "ntkngd.train(..., loss='ce')",
    "mse": "ntkngd.losses.mse.value (or ntkngd.dynamics.trajectory.mse, in NumPy)",
}

CEOperator = LossOperator
CETrajectory = Trajectory
CETrainLog = TrainLog
_CE = softmax_cross_entropy
__all__ = sorted(NAMES)


def softmax_hessian(p: Any) -> jnp.ndarray:
    """diag(p) - p p^T over the last axis: (..., C) probabilities -> (..., C, C)."""
    p = jnp.asarray(p)
    return jnp.einsum("...c,cd->...cd", p, jnp.eye(p.shape[-1], dtype=p.dtype)) - \
        p[..., :, None] * p[..., None, :]


def ce_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """softmax(f) - y (N times the cross-entropy gradient in f)."""
    return jax.nn.softmax(f, axis=-1) - y


def _kernels(K):
    if not isinstance(K, Kernels):
        raise TypeError(f"K must be an ntkngd.Kernels (from analytic_kernels or empirical_kernels), "
                        f"got {type(K).__name__}")
    return K


def ce_operator(method: Union[str, BlockPattern], K: Kernels, damping: float = 0.0) -> LossOperator:
    """The cross-entropy operator of `method` on K. rho = 0 takes the minimum-norm limit, which
    here needs infinite-width kernels (see `ce_min_norm_operator`)."""
    K = _kernels(K)
    damping = _checks.non_negative(damping, "damping")
    _CE.check_outputs(int(K.out_dim))
    if damping == 0 and not K.kron_outputs and get_method(method).kind != "gd":
        raise ValueError("cross-entropy NGD with damping = 0 needs infinite-width kernels "
                         "(kron_outputs=True) here; pass damping > 0 or use "
                         "ce_min_norm_operator / ntkngd.operator(..., loss='ce')")
    return loss_operator(get_method(method), K, damping, _CE)


def ce_min_norm_operator(method: Union[str, BlockPattern], K: Kernels) -> LossOperator:
    """The rho -> 0 cross-entropy operator on finite-width kernels (infinite-width kernels are
    passed on to ce_operator(method, K, 0)); see `dynamics.loss_flow.min_norm_operator`."""
    K = _kernels(K)
    _CE.check_outputs(int(K.out_dim))
    if K.kron_outputs:
        return ce_operator(method, K, 0.0)
    return min_norm_operator(get_method(method), K, _CE)


def ce_predict(method: Union[str, BlockPattern, LossOperator], K: Optional[Kernels],
               f0_train: Any, y_train: Any, f0_test: Any = None, *, y_test: Any = None,
               lr: float = 1.0, times: Any = None, steps: Any = None, damping: float = 0.0,
               **solver) -> Trajectory:
    """Cross-entropy dynamics of `method` (a name, `block_pattern(S)` or a prebuilt operator,
    then K may be None) in function space: `ntkngd.predict` of its `ce_operator`."""
    op = method if isinstance(method, LossOperator) else ce_operator(method, K, damping)
    return predict(op, f0_train, y_train, f0_test, y_test=y_test, lr=lr, times=times,
                   steps=steps, **solver)


def ce_direction(method, net, params: Any, x: Any, y: Any, damping: Optional[float] = None,
                 loss: Union[str, Loss] = softmax_cross_entropy) -> list:
    """`ngd_direction` with the softmax cross-entropy loss (one-hot y, C >= 2)."""
    from .engine import ngd_direction
    L = get_loss(loss)
    L.check_outputs(net.out_dim)
    return ngd_direction(method, net, params, x, y, damping, L)


def train_ce(method, net, params: Any, data: tuple, steps: int = 5, lr: Optional[float] = None,
             damping: Optional[float] = None, *, lr_fraction: float = 0.5,
             analytic: Optional[Kernels] = None,
             loss: Union[str, Loss] = softmax_cross_entropy) -> TrainLog:
    """`ntkngd.train` with the softmax cross-entropy loss by default."""
    from .training.loop import train
    return train(method, net, params, data, steps, lr, damping, loss, lr_fraction=lr_fraction,
                 analytic=analytic)

