"""ntkngd: natural gradient descent with exact and approximate Fisher information in wide networks."""
from ._checks import TheoryConditionWarning
from .function_space import Operator
from .kernels import Kernels, analytic_kernels
from .methods import (METHODS, BlockPattern, Method, block_pattern, get_method, method_names,
                      pattern_method, register_method)
from . import losses
from .losses import Loss, get_loss, register_loss
from .methods.patterns import alpha as pattern_alpha
from .methods.patterns import tridiagonal as tridiagonal_pattern
from .network import ACTIVATIONS, Network, mlp
from .operators import operator
from .dynamics import Trajectory, mse, predict
from .diagnostics import IsotropyReport, isotropy
from .empirical import empirical_kernels
from .engine import TrainLog, ngd_direction, ngd_transform, train
from .cross_entropy import (CEOperator, CETrajectory, ce_operator, ce_predict, ce_residual,
                            softmax_hessian)
from .ce_engine import CETrainLog, ce_direction, train_ce
from .cross_entropy import ce_min_norm_operator
from .loss_dynamics import LossOperator
from . import data

__all__ = [
    "ACTIVATIONS", "BlockPattern", "CEOperator", "CETrainLog", "CETrajectory", "IsotropyReport",
    "Kernels", "Loss", "LossOperator", "METHODS", "Method", "get_loss", "get_method", "losses",
    "method_names", "pattern_method", "register_loss", "register_method", "Network", "Operator", "TheoryConditionWarning", "TrainLog",
    "Trajectory", "analytic_kernels", "block_pattern", "ce_direction", "ce_min_norm_operator",
    "ce_operator", "ce_predict", "ce_residual", "data", "empirical_kernels", "isotropy", "mlp",
    "mse", "ngd_direction", "ngd_transform", "operator", "pattern_alpha", "predict",
    "softmax_hessian", "train", "train_ce", "tridiagonal_pattern",
]
