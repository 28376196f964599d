"""`train`: T steps of any method, loss and network (one loop over the direction `ngd_transform`
gives optax, `engine.jitted_direction`, computed once per step), logged beside the function-space
predictions of the empirical and the infinite-width operators (NaN where a method has none),
accuracy, and, without a constant operator (losses other than MSE, Shampoo), the per-step
isotropy of the linearized step (training.observers). Inputs are validated once, at the entry.

lr=None: with a constant operator (MSE) the empirical operator's lr (1/alpha when isotropic,
1/lambda_max otherwise); otherwise lr_fraction / alpha (alpha from theory, else fitted at t = 0;
lr_fraction 0.5 off MSE, where half the Newton step keeps the linearization accurate, else 1);
GD N / lambda_max(Theta). Layer methods (K-FAC, unit-wise, per-layer preconditioners) have no
theory off MSE: their predictions are exact NGD at lr * alpha, training set only.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import TheoryConditionWarning
from ..dynamics.operators import operator
from ..dynamics.trajectory import mse
from ..engine import apply_update, jitted_direction
from ..networks.empirical import empirical_kernels
from ..networks.kernels import Kernels, analytic_of_checked
from ..losses import Loss, get_loss
from ..losses import mse as mse_loss
from ..methods import BlockPattern, Method, get_method
from .log import TrainLog
from .observers import (accuracy_fn, default_lr, isotropy_fit, predictions, reference_alpha)

_ANALYTIC: list = []     # [(net, input bytes, Kernels)]: the last 4, shared by every method


def train(method: Union[str, BlockPattern, Method], net, params: Any, data: tuple,
          steps: int = 5, lr: Optional[float] = None, damping: Optional[float] = None,
          loss: Union[str, Loss] = "mse", *, lr_fraction: Optional[float] = None,
          analytic: Optional[Kernels] = None) -> TrainLog:
    """T steps params <- params - lr * direction of `method` on a finite network, logged beside
    the function-space predictions (module docstring). data = (x_train, y_train, x_test, y_test),
    targets valid for the loss; damping=None: the method's default; lr_fraction: only without a
    constant operator; analytic: precomputed `analytic_kernels(net, x_train, x_test)`. A step
    that makes the outputs non-finite raises FloatingPointError naming the step."""
    m, L = get_method(method), get_loss(loss)
    fixed = L.identity_hessian and not m.nonlinear     # a constant function-space operator
    if lr_fraction is not None and fixed:
        raise TypeError(f"train() option lr_fraction= applies only to losses other than MSE "
                        f"(or methods without a constant operator, such as Shampoo); "
                        f"loss={L.name!r} with {m.name} takes no such option")
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    lr = None if lr is None else _checks.positive(lr, "lr")
    damping = None if damping is None else _checks.non_negative(damping, "damping")
    lr_fraction = _checks.positive((1.0 if L.identity_hessian else 0.5) if lr_fraction is None
                                   else lr_fraction, "lr_fraction")
    L.check_outputs(net.out_dim)
    K0 = empirical_kernels(net, params, data[0], data[2])      # checks params and inputs
    ytr = np.asarray(L.validate(data[1], "y_train", K0.n_train, net.out_dim), np.float64)
    yte = np.asarray(L.validate(data[3], "y_test", K0.n_test, net.out_dim), np.float64)
    dtype = jnp.result_type(jax.tree_util.tree_leaves(params)[0].dtype, jnp.float32)
    x, xt, y = (jnp.asarray(a, dtype) for a in (data[0], data[2], ytr))
    rho = float(m.resolve_damping(K0, damping))
    f0, f0t = _outputs(net, params, x), _outputs(net, params, xt)
    Ka = analytic if analytic is not None else _analytic(net, data[0], data[2])

    def direction(p):
        return jitted_direction(m, net, L, rho, p, x, y)[0]

    def measure(p, d, f) -> dict:
        return isotropy_fit(_jvp(net, p, d, x), f, ytr, alpha, L)

    notes: list = []
    fits: list = []
    d = None          # the direction at the initial parameters, once computed
    if fixed:
        op_emp = operator(m, K0, rho)
        lr = op_emp.lr if lr is None else lr
        alpha, pred_alpha, lr_pred = op_emp.alpha, None, lr
        op_inf = _wide(m, Ka, 0.0 if m.default_damping is not None else rho, L, notes)
        with_test = True
    else:
        alpha = reference_alpha(m, net, K0.n_train, data[0], L)
        d = direction(params)
        fits.append(measure(params, d, f0))
        pred_alpha = fits[0]["alpha_fit"] if alpha is None else alpha
        lr = default_lr(m, K0, K0.n_train, pred_alpha, lr_fraction) if lr is None else lr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryConditionWarning)
            if m.kind == "layer":      # no theory with this loss: exact NGD at lr * alpha
                exact, lr_pred, with_test = get_method("exact"), lr * pred_alpha, False
                op_emp = operator(exact, K0, 0.0, L)
                wide = _wide(m, Ka, 0.0 if m.default_damping is not None else rho, mse_loss,
                             notes)
                op_inf = None if wide is None else operator(exact, Ka, 0.0, L)
                notes.append(f"{m.name} with the {L.name} loss has no function-space theory "
                             f"(open): predictions are exact NGD at lr * alpha = {lr_pred:.4g} "
                             f"(alpha {'derived' if alpha is not None else 'fitted at t = 0'}), "
                             "training set only")
            else:
                op_emp, lr_pred, with_test = operator(m, K0, rho, L), lr, True
                op_inf = _wide(m, Ka, rho, L, notes)
                notes += list(op_emp.notes)
    f0t_pred = f0t if with_test else None
    pe = predictions(op_emp, f0, ytr, f0t_pred, yte, lr_pred, steps)
    pi = predictions(op_inf, f0, ytr, f0t_pred, yte, lr_pred, steps)
    if op_inf is not None and op_inf.test is None and with_test:   # unit-wise at infinite width
        pi = (pi[0], pe[1], pi[2], pe[3])
    value = mse if L is mse_loss else (lambda f, target: float(L.value(f, target)))
    acc = accuracy_fn(L, ytr, yte)
    logs: dict[str, list] = {k: [] for k in ("tr", "te", "atr", "ate")}

    def record(f, ft) -> None:
        for k, v in (("tr", value(f, ytr)), ("te", value(ft, yte)), ("atr", acc(f, ytr)),
                     ("ate", acc(ft, yte))):
            logs[k].append(float(v))

    p, lr_j = list(params), jnp.asarray(lr, dtype)
    record(f0, f0t)
    d = direction(p) if d is None else d       # t = 0 (off MSE the observer already has it)
    for t in range(1, steps + 1):
        p = _update(p, d, lr_j)
        f, ft = _outputs(net, p, x), _outputs(net, p, xt)
        _finite_or_diverged((f, ft), t, lr, m.name)
        record(f, ft)
        if t < steps:
            d = direction(p)
            if fits:
                fits.append(measure(p, d, f))
    arr = np.asarray
    iso = {k: arr([r[k] for r in fits]) if fits else None
           for k in ("alpha_fit", "deviation", "deviation_ref")}
    return TrainLog(m.name, float(lr), rho, alpha, np.arange(steps + 1),
                    *(arr(logs[k]) for k in ("tr", "te", "atr", "ate")),
                    arr(pe[0]), arr(pe[1]), arr(pi[0]), arr(pi[1]), pred_alpha=pred_alpha,
                    pred_emp_train_acc=arr(pe[2]), pred_emp_test_acc=arr(pe[3]),
                    pred_inf_train_acc=arr(pi[2]), pred_inf_test_acc=arr(pi[3]), **iso,
                    notes=tuple(notes), loss=L.name)


def _wide(m: Method, Ka: Kernels, rho: float, L: Loss, notes: list):
    """The method's infinite-width operator, or None where it has none (ValueError: no wide
    limit on these kernels or at this damping, e.g. KFC on a CNN, the damped diagonal Fisher)."""
    try:
        return operator(m, Ka, rho, L)
    except ValueError as err:      # said in the log: pred_inf_* are NaN, and why
        notes.append(f"no infinite-width prediction (pred_inf_* are NaN): {err}")
        return None


def _analytic(net, x_train, x_test) -> Kernels:
    """Infinite-width kernels of inputs `train` has checked, memoized on the network object, the
    input bytes and JAX's default float (their dtype); the last 4 kept."""
    key = (np.asarray(x_train).tobytes(), np.asarray(x_test).tobytes(), jnp.zeros(()).dtype)
    for n, k, K in _ANALYTIC:
        if n is net and k == key:
            return K
    K = analytic_of_checked(net, np.asarray(x_train), np.asarray(x_test))
    _ANALYTIC[:] = _ANALYTIC[-3:] + [(net, key, K)]
    return K


def _outputs(net, params, x) -> np.ndarray:
    """f(x) (N, C) as float64 on the host (one jitted forward pass)."""
    return np.asarray(net.outputs(params, x), np.float64)


_update = jax.jit(apply_update)     # params - lr d: the step optax.apply_updates takes


@partial(jax.jit, static_argnums=0)
def _jvp_jit(net, params, d, x):
    d = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                     jax.tree_util.tree_leaves(d))
    return jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1]


def _jvp(net, params, d, x) -> np.ndarray:
    """J d (N, C): the linearized output change of the direction d (forward-mode autodiff)."""
    return np.asarray(_jvp_jit(net, params, d, x), np.float64)


def _finite_or_diverged(arrays, t: int, lr: float, method: str) -> None:
    """Raise a clear error when a step made the outputs non-finite (the step diverged)."""
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise FloatingPointError(
            f"{method}: training diverged at step {t}: the network outputs are NaN/inf after a "
            f"step of size lr = {lr:.4g} (the step, not the initial parameters, is at fault); "
            "use a smaller lr or damping > 0")
