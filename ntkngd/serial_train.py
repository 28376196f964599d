"""Finite-width training of a `SerialNetwork`, logged beside the function-space predictions of the
empirical operator at initialization and of the infinite-width operator (analytic kernels through
neural-tangents) started from the network's own outputs. MSE: the same `TrainLog` as for MLPs;
K-FAC (KFC) and channel-wise have no infinite-width operator: their `pred_inf_*` are NaN.
Cross-entropy / binary cross-entropy (`serial_train_ce`): the same `TrainLog` as
`ntkngd.ce_engine.train_ce`, for GD and block patterns (KFC and channel-wise: MSE only).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from .ce_engine import _prediction, default_lr, ce_isotropy, reference_alpha
from .engine import TrainLog, _finite_or_diverged, _predictions, apply_update, log_step
from .loss_dynamics import loss_operator
from .losses import Loss, accuracy_or_nan, get_loss
from .methods import get_method
from .operators import operator
from .serial_network import SerialNetwork
from .serial_empirical import param_dtype, serial_empirical_kernels, serial_outputs
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
                 loss: Union[str, Loss] = "mse", **loss_options):
    """T steps of `method` (params - lr * direction), MSE; lr None: the empirical operator's
    lr at initialization (1/alpha when isotropic, 1/lambda_max otherwise); damping None: the
    method's default. Layer-structured methods (K-FAC, channel-wise) have no infinite-width
    operator: their `pred_inf_*` are NaN. Other losses: `serial_train_ce` (loss_options:
    lr_fraction, analytic)."""
    if not get_loss(loss).identity_hessian or get_method(method).nonlinear:
        if get_loss(loss).identity_hessian:     # no fixed operator (shampoo): per-step fit
            loss_options.setdefault("lr_fraction", 1.0)
        return serial_train_ce(method, net, params, data, steps, lr, damping, loss=loss,
                               **loss_options)
    from .engine import reject_loss_options
    reject_loss_options(loss_options, get_loss(loss))
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


def _linearized_step(net: SerialNetwork, params, x, d) -> np.ndarray:
    """J d (N, C) by one jax.jvp of the network."""
    return np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1], np.float64)


def serial_train_ce(method, net: SerialNetwork, params: Any, data: tuple, steps: int = 5,
                    lr: Optional[float] = None, damping: Optional[float] = None, *,
                    lr_fraction: float = 0.5, analytic=None,
                    loss: Union[str, Loss] = "softmax_cross_entropy") -> TrainLog:
    """`ntkngd.ce_engine.train_ce` on a serial network (GD and block patterns): T steps of
    params - lr * direction with the loss's output Hessian in the dual systems, logged beside the
    loss-dynamics predictions of the empirical (initialization) and infinite-width operators, and
    per step the alpha_fit / deviation of the linearized step J d (jax.jvp) from alpha H^+ r.
    lr None: lr_fraction / alpha (GD: N / lambda_max(Theta))."""
    L = get_loss(loss)
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    m = get_method(method)
    if m.kind == "layer" and m.update is None:
        raise ValueError(f"{m.name} on a serial network supports the MSE loss only; with the "
                         f"{L.name} loss use GD or a block pattern")
    L.check_outputs(net.out_dim)
    if damping is not None:
        damping = _checks.non_negative(damping, "damping")
    lr_fraction = _checks.positive(lr_fraction, "lr_fraction")
    xtr, ytr_raw, xte, yte_raw = data
    K0 = serial_empirical_kernels(net, params, xtr, xte)
    f0 = np.asarray(serial_outputs(net, params, xtr), np.float64)
    f0t = np.asarray(serial_outputs(net, params, xte), np.float64)
    n = f0.shape[0]
    ytr = np.asarray(L.validate(ytr_raw, "y_train", n, net.out_dim), np.float64)
    yte = np.asarray(L.validate(yte_raw, "y_test", f0t.shape[0], net.out_dim), np.float64)
    rho = float(m.resolve_damping(K0, damping))
    alpha = reference_alpha(m, net, n, loss=L)
    xj = jnp.asarray(net.check_inputs(xtr), param_dtype(params))
    pred_m, lr_pred, with_test = m, None, True
    if m.update is not None:    # per-layer preconditioners: exact NGD at lr * alpha_fit(t = 0)
        d0 = direction(m, net, params, xtr, ytr, rho, L)[0]
        alpha = ce_isotropy(_linearized_step(net, params, xj, d0), f0, ytr, None, L)["alpha_fit"]
        pred_m, with_test = get_method("exact"), False
    lr = _checks.positive(lr, "lr") if lr is not None else default_lr(m, K0, n, alpha, lr_fraction)
    lr_pred = lr if m.update is None else lr * alpha
    rho_pred = rho if m.update is None else 0.0
    pe = _prediction(loss_operator(pred_m, K0, rho_pred, L), f0, ytr, f0t, yte, lr_pred, steps,
                     with_test)
    if m.update is None:
        Ka = analytic if analytic is not None else _analytic(net, xtr, xte)
        pi = _prediction(loss_operator(pred_m, Ka, rho_pred, L), f0, ytr, f0t, yte, lr_pred,
                         steps, with_test)
    else:   # no infinite-width theory for these on a serial network
        pi = tuple(np.full(steps + 1, np.nan) for _ in range(4))
    logs: dict[str, list] = {k: [] for k in ("tr", "te", "atr", "ate", "fit", "dev", "ref")}
    p, f, ft = params, f0, f0t
    for t in range(steps + 1):
        for k, v in (("tr", L.value(f, ytr)), ("te", L.value(ft, yte)),
                     ("atr", accuracy_or_nan(L, f, ytr)), ("ate", accuracy_or_nan(L, ft, yte))):
            logs[k].append(float(v))
        if t == steps:
            break
        d = direction(m, net, p, xtr, ytr, rho, L)[0]
        iso = ce_isotropy(_linearized_step(net, p, xj, d), f, ytr, alpha, L)
        for k, key in (("fit", "alpha_fit"), ("dev", "deviation"), ("ref", "deviation_ref")):
            logs[k].append(iso[key])
        p = apply_update(p, d, lr)
        f = np.asarray(serial_outputs(net, p, xtr), np.float64)
        ft = np.asarray(serial_outputs(net, p, xte), np.float64)
        _finite_or_diverged((f, ft), t + 1, lr, m.name)
    arr = np.asarray
    pe_tr, pe_te, pe_atr, pe_ate = map(arr, pe)
    pi_tr, pi_te, pi_atr, pi_ate = map(arr, pi)
    return TrainLog(m.name, float(lr), rho, alpha, np.arange(steps + 1),
                    *(arr(logs[k]) for k in ("tr", "te", "atr", "ate")),
                    pe_tr, pe_te, pi_tr, pi_te, pred_alpha=alpha,
                    pred_emp_train_acc=pe_atr, pred_emp_test_acc=pe_ate,
                    pred_inf_train_acc=pi_atr, pred_inf_test_acc=pi_ate,
                    alpha_fit=arr(logs["fit"]), deviation=arr(logs["dev"]),
                    deviation_ref=arr(logs["ref"]))
