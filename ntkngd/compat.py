"""The v0.1 names (softmax cross-entropy beside MSE), kept working on top of the one engine.

Reading one of `NAMES` as `ntkngd.<name>` warns once per name (DeprecationWarning, naming the
replacement); importing it from here does not. The loss is `ntkngd.losses.softmax_cross_entropy`.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp

from ._names import COMPAT_NAMES
from .dynamics.loss_flow import LossOperator
from .dynamics.operators import operator
from .dynamics.trajectory import Trajectory, mse, predict
from .networks.kernels import Kernels
from .losses import Loss, _probability_hessian, get_loss, softmax_cross_entropy
from .methods import BlockPattern, get_method
from .training.log import TrainLog

NAMES = COMPAT_NAMES
CEOperator = LossOperator
CETrajectory = Trajectory
CETrainLog = TrainLog
_CE = softmax_cross_entropy
__all__ = sorted(NAMES)


def softmax_hessian(p: Any) -> jnp.ndarray:
    """diag(p) - p p^T over the last axis: (..., C) probabilities -> (..., C, C)."""
    return _probability_hessian(jnp.asarray(p))


def ce_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """softmax(f) - y (N times the cross-entropy gradient in f)."""
    return jax.nn.softmax(f, axis=-1) - y


def ce_operator(method: Union[str, BlockPattern], K: Kernels, damping: float = 0.0) -> LossOperator:
    """The cross-entropy operator of `method` on K: `ntkngd.operator(method, K, damping, 'ce')`,
    except that rho = 0 needs infinite-width kernels here (see `ce_min_norm_operator`)."""
    if isinstance(K, Kernels) and not K.kron_outputs and damping == 0:
        _CE.check_outputs(int(K.out_dim))
        if get_method(method).kind != "gd":
            raise ValueError("cross-entropy NGD with damping = 0 needs infinite-width kernels "
                             "(kron_outputs=True) here; pass damping > 0 or use "
                             "ce_min_norm_operator / ntkngd.operator(..., loss='ce')")
    return operator(method, K, damping, _CE)


def ce_min_norm_operator(method: Union[str, BlockPattern], K: Kernels) -> LossOperator:
    """The rho -> 0 cross-entropy operator, `ntkngd.operator(method, K, 0.0, loss='ce')` (on
    finite-width kernels: `dynamics.loss_flow.min_norm_operator`)."""
    return operator(method, K, 0.0, _CE)


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
    get_loss(loss).check_outputs(net.out_dim)
    return ngd_direction(method, net, params, x, y, damping, loss)


def train_ce(method, net, params: Any, data: tuple, steps: int = 5, lr: Optional[float] = None,
             damping: Optional[float] = None, *, lr_fraction: float = 0.5,
             analytic: Optional[Kernels] = None,
             loss: Union[str, Loss] = softmax_cross_entropy) -> TrainLog:
    """`ntkngd.train` with the softmax cross-entropy loss by default."""
    from .training.loop import train
    return train(method, net, params, data, steps, lr, damping, loss, lr_fraction=lr_fraction,
                 analytic=analytic)

