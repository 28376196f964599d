"""Finite-width training of a `SerialNetwork` (MSE), logged beside the function-space predictions
of the empirical operator at initialization and of the infinite-width operator (analytic kernels
through neural-tangents) started from the network's own outputs. Same `TrainLog` as for MLPs;
K-FAC (KFC) and channel-wise have no infinite-width operator: their `pred_inf_*` are NaN.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from . import _checks
from .engine import TrainLog, _predictions, apply_update, log_step
from .losses import Loss, get_loss
from .methods import get_method
from .operators import operator
from .serial_network import SerialNetwork
from .serial_empirical import serial_empirical_kernels, serial_outputs
from .serial_kernels import serial_analytic_kernels
from .serial_methods import direction
_ANALYTIC: dict = {}     # (layers, inputs) -> analytic Kernels: every method reuses them


def _analytic(net: SerialNetwork, xtr, xte):
    """Infinite-width kernels, memoized on the stax layers and the input bytes (last 4 kept)."""
    key = (tuple(id(f) for layer in net.layers for f in layer), np.asarray(xtr).tobytes(),
           np.asarray(xte).tobytes())
    if key not in _ANALYTIC:
        while len(_ANALYTIC) >= 4:
            _ANALYTIC.pop(next(iter(_ANALYTIC)))
        _ANALYTIC[key] = serial_analytic_kernels(net, xtr, xte)
    return _ANALYTIC[key]


def serial_train(method, net: SerialNetwork, params: Any, data: tuple, steps: int = 5,
                 lr: Optional[float] = None, damping: Optional[float] = None,
                 loss: Union[str, Loss] = "mse") -> TrainLog:
    """T steps of `method` (params - lr * direction), MSE loss; lr None: the empirical operator's
    lr at initialization (1/alpha when isotropic, 1/lambda_max otherwise); damping None: the
    method's default. Layer-structured methods (K-FAC, channel-wise) have no infinite-width
    operator: their `pred_inf_*` are NaN."""
    if not get_loss(loss).identity_hessian:
        raise ValueError("training a serial network supports the MSE loss only (loss='mse')")
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    m = get_method(method)
    if damping is not None:
        damping = _checks.non_negative(damping, "damping")
    xtr, ytr_raw, xte, yte_raw = data
    K0 = serial_empirical_kernels(net, params, xtr, xte)
    f0 = np.asarray(serial_outputs(net, params, xtr), np.float64)
    f0t = np.asarray(serial_outputs(net, params, xte), np.float64)
    ytr = _checks.outputs(ytr_raw, "y_train", f0.shape[0], net.out_dim)
    yte = _checks.outputs(yte_raw, "y_test", f0t.shape[0], net.out_dim)
    rho = float(m.resolve_damping(K0, damping))
    op_emp = operator(m, K0, rho)
    lr = op_emp.lr if lr is None else _checks.positive(lr, "lr")
    pe_tr, pe_te = _predictions(op_emp, f0, ytr, f0t, yte, lr, steps)
    if m.kind == "layer":
        pi_tr = pi_te = np.full(steps + 1, np.nan)
    else:
        pi_tr, pi_te = _predictions(operator(m, _analytic(net, xtr, xte), rho), f0, ytr, f0t,
                                    yte, lr, steps)
    logs: dict[str, list] = {k: [] for k in ("tr", "te", "atr", "ate")}
    p = params
    for t in range(steps + 1):
        if t > 0:
            p = apply_update(p, direction(m, net, p, xtr, ytr, rho)[0], lr)
        f = f0 if t == 0 else np.asarray(serial_outputs(net, p, xtr), np.float64)
        ft = f0t if t == 0 else np.asarray(serial_outputs(net, p, xte), np.float64)
        log_step(logs, (f, ft), (ytr, yte), t, lr, m.name)
    return TrainLog(m.name, float(lr), rho, op_emp.alpha, np.arange(steps + 1),
                    *(np.asarray(logs[k]) for k in ("tr", "te", "atr", "ate")),
                    np.asarray(pe_tr), np.asarray(pe_te), np.asarray(pi_tr), np.asarray(pi_te))
