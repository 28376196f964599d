"""Finite-width training in parameter space (any registered method, any loss), jitted.

Every method's update is  Delta theta = -lr * d  with  d[W_l; b_l] = Ht_l^T A_l, where the
per-sample signals A_l (N, M_l) come from the method's own dual solve (ntkngd/methods: the same
system as its function-space operator G, with the loss's output Hessian), Ht_l the layer inputs and
D_l the backprops of `ntkngd.empirical`. Linearized, J d = G(f) r (docs/theory.md), so one MSE step
at lr = 1/alpha converges for an isotropic G. `_core` (features, kernels, dual solve, contraction)
runs under jax.jit with method, network, loss and damping static: `ngd_direction` validates on the
host once and is itself jittable; `train_step` is the device-resident step `train` loops over.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks, empirical
from .dynamics import mse, predict
from .kernels import Kernels, analytic_kernels
from .losses import Loss, class_encoding, coded_accuracy, get_loss
from .losses import mse as mse_loss
from .methods import BlockPattern, Method, get_method
from .network import Network
from .operators import operator
from .train_log import TrainLog

MethodLike = Union[str, BlockPattern, Method]


def _traced(*trees) -> bool:
    return any(isinstance(a, jax.core.Tracer) for t in trees for a in jax.tree_util.tree_leaves(t))


def _under_trace() -> bool:
    """Whether a JAX transformation (jit, vmap, ...) is tracing this call: then even closed-over
    concrete arrays become tracers in every operation, so no host check can run."""
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def signals(method: MethodLike, K: Kernels, damping: float, g: Any) -> list:
    """Per-layer MSE signals A_l of `method` on finite-width kernels K for residual g (N, C)."""
    g = jnp.asarray(g)
    return get_method(method).signals(K, damping, g, jnp.zeros_like(g), mse_loss)


def _kernels(net: Network, x, f, hts, ds) -> Kernels:
    qs, bs, blocks = empirical._grams(hts, ds, hts, ds)
    return Kernels(blocks_train=blocks, fwd_train=qs, bwd_train=bs, out_dim=net.out_dim,
                   kron_outputs=False, network=net, input_dim=x.shape[1],
                   layer_inputs_train=hts, backprops_train=ds)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _core(method: Method, net: Network, loss: Loss, damping, dense, x, y):
    """(augmented per-layer updates Ht_l^T A_l, outputs f, damping used), all on device."""
    f, hts, ds = empirical.features(net, dense, x)
    K = _kernels(net, x, f, hts, ds)
    rho = method.resolve_damping(K, damping)
    if method.update is not None:     # per-layer preconditioners (methods/_layers.py)
        return tuple(method.update(K, rho, f, y.astype(f.dtype), loss)), f, \
            jnp.asarray(rho, f.dtype)
    sig = method.signals(K, rho, f, y.astype(f.dtype), loss)
    return empirical.contract(hts, sig), f, jnp.asarray(rho, f.dtype)


def _prepare(net, params, x, y, loss: Loss, check: bool):
    """(dense params, x, y) as device arrays; host validation only when `check`."""
    if check:
        x = _checks.inputs(x, "x_train")
        dense = empirical.dense_params(net, params, x.shape[1])
        _checks.input_scale(x, "x_train", empirical.param_dtype(dense))
        y = loss.validate(y, "y_train", x.shape[0], net.out_dim)
    else:
        dense = empirical.dense_params(net, params, None, check_finite=False)
    dtype = empirical.param_dtype(dense)
    return dense, jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _check_damping(damping):
    return None if damping is None else _checks.non_negative(damping, "damping")


def ngd_direction(method: MethodLike, net: Network, params: Any, x_train: Any, y_train: Any,
                  damping: Optional[float] = None, loss: Union[str, Loss] = "mse") -> list:
    """Parameter-space direction d (a pytree like params) of `method` on the batch (X, Y).

    One step is params - lr * d; for NGD-type methods lr = 1/alpha (`ntkngd.operator(method,
    ntkngd.empirical_kernels(...)).lr`). `method`: a registered name (gd, exact, block_diagonal,
    block_tridiagonal, kfac, unit_wise, ...), ntkngd.block_pattern(S) or a Method. damping rho >= 0
    is the parameter-space Tikhonov damping (F + rho I; factored sqrt(rho) for K-FAC); None: the
    method's default (0; unit-wise: `methods.unitwise.default_damping`). loss: "mse",
    "softmax_cross_entropy" (alias "ce"), "sigmoid_binary_cross_entropy" or a Loss; the dual
    systems take its output Hessian. Runs jitted in the parameters' dtype; jittable itself with
    method, net, damping and loss static (inputs are then not validated on the host).
    """
    m, L = get_method(method), get_loss(loss)
    if getattr(net, "is_serial", False):   # hook: stax serial networks
        from .serial_methods import direction
        return direction(m, net, params, x_train, y_train, damping, L)[0]
    if _traced(damping):
        raise TypeError("damping is a traced value: it selects the dual solve and must be a "
                        "concrete Python number under jax.jit (close over it, or mark it static "
                        "with static_argnums)")
    damping = _check_damping(damping)
    check = not (_traced(params, x_train, y_train) or _under_trace())
    dense, x, y = _prepare(net, params, x_train, y_train, L, check)
    dws = _core(m, net, L, damping, dense, x, y)[0]
    return empirical.split_update(net, dense, dws)


def ngd_transform(method: MethodLike, net: Network, damping: Optional[float] = None,
                  loss: Union[str, Loss] = "mse") -> optax.GradientTransformationExtraArgs:
    """An optax transformation that replaces the incoming updates by `ngd_direction` on the batch
    passed as extra arguments: `update(grads, state, params, x=..., y=...)`. Chain it with
    `optax.scale(-lr)`; works inside jax.jit (the incoming grads are ignored: the direction is
    rebuilt from the batch).
    """
    m, L = get_method(method), get_loss(loss)
    damping = _check_damping(damping)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, x=None, y=None, **extra):
        del updates, extra
        if params is None or x is None or y is None:
            raise ValueError("ngd_transform needs params and the batch: update(grads, state, "
                             "params, x=x_batch, y=y_batch)")
        return ngd_direction(m, net, params, x, y, damping, L), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def train_step(method: Method, net: Network, loss: Loss, damping, dense, x, y, lr):
    """One jitted step on the dense per-layer parameters [(W_l, b_l)]: dense - lr * d."""
    dws = _core(method, net, loss, damping, dense, x, y)[0]
    out = []
    for (W, b), dw in zip(dense, dws):
        W2 = W - lr.astype(W.dtype) * dw[:W.shape[0]].astype(W.dtype)
        b2 = None if b is None else b - lr.astype(b.dtype) * dw[W.shape[0]:].reshape(b.shape)
        out.append((W2, b2))
    return out


def to_stax(net: Network, params: Any, dense: list) -> list:
    """Dense per-layer parameters back into the stax params list (activation layers ())."""
    out = []
    for l, (W, b) in enumerate(dense, start=1):
        orig = params[2 * (l - 1)][1]
        out.append((W, None if b is None else b.reshape(jnp.shape(orig))))
        if l < net.depth:
            out.append(params[2 * l - 1])
    return out


def apply_update(params: Any, d: Any, lr: float) -> list:
    """params - lr * d for stax parameter lists (activation layers carry (); a missing bias None)."""
    out = []
    for p, dp in zip(params, d):
        if p in ((), []):
            out.append(p)
        else:
            out.append(tuple(None if a is None else a - jnp.asarray(lr, a.dtype) * b
                             for a, b in zip(p, dp)))
    return out


def accuracy(f: np.ndarray, y: np.ndarray, encoding: Optional[tuple] = None) -> float:
    """Fraction of points classified as their targets code them (`losses.class_encoding`: 0/1 ->
    f > 0.5, +-1 / +-0.5 -> sign, one-hot -> argmax; read from y unless `encoding` is given);
    ValueError for targets that code no classes."""
    return float(coded_accuracy(f, y, class_encoding(y) if encoding is None else encoding))


def _encoding(*ys) -> Optional[tuple]:
    """The targets' class encoding, or None (accuracy logged as NaN) for regression targets."""
    try:
        return class_encoding(*ys)
    except ValueError:
        return None


def _predictions(op, f0, y, f0t, yt, lr, steps):
    traj = predict(op, f0, y, f0t if op.test is not None else None, lr=lr, steps=steps,
                   y_test=yt if op.test is not None else None)
    test = traj.test_loss if traj.test_loss is not None else np.full(steps + 1, np.nan)
    return traj.train_loss, test


def _finite_or_diverged(arrays, t: int, lr: float, method: str) -> None:
    """Raise a clear error when a step made the outputs non-finite (the step diverged)."""
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise FloatingPointError(
            f"{method}: training diverged at step {t}: the network outputs are NaN/inf after a "
            f"step of size lr = {lr:.4g} (the step, not the initial parameters, is at fault); "
            "use a smaller lr or damping > 0")


def log_step(logs: dict, outputs: tuple, targets: tuple, t: int, lr: float, name: str) -> None:
    """Append step t's train/test MSE and accuracy to `logs` (keys tr, te, atr, ate); outputs
    (f, f_test) must be finite (else the step diverged: a clear error). Accuracy follows the
    class coding of the train and test targets together (`accuracy`); NaN for regression
    targets."""
    (f, ft), (ytr, yte) = outputs, targets
    _finite_or_diverged((f, ft), t, lr, name)
    enc = _encoding(ytr, yte)
    acc = (lambda a, b: np.nan) if enc is None else (lambda a, b: accuracy(a, b, enc))
    for k, v in (("tr", mse(f, ytr)), ("te", mse(ft, yte)), ("atr", acc(f, ytr)),
                 ("ate", acc(ft, yte))):
        logs[k].append(float(v))


_LOSS_OPTIONS = ("lr_fraction", "analytic")


def reject_loss_options(options: dict, loss: Loss) -> None:
    """TypeError naming the first keyword `train` cannot use with `loss` (MSE takes none of the
    other losses' options; anything else is unknown: a typo such as dampnig= must not be dropped)."""
    for k in options:
        if k in _LOSS_OPTIONS:
            raise TypeError(f"train() option {k}= applies only to losses other than MSE; "
                            f"loss={loss.name!r} takes no such option")
        raise TypeError(f"train() got an unexpected keyword argument {k!r}")


def train(method: MethodLike, net: Network, params: Any, data: tuple, steps: int = 5,
          lr: Optional[float] = None, damping: Optional[float] = None,
          loss: Union[str, Loss] = "mse", **loss_options):
    """T steps of `method` on a finite network, logged beside the function-space predictions.

    data = (x_train, y_train, x_test, y_test). lr=None uses the empirical operator's lr at
    initialization (1/alpha when isotropic). damping as in `ngd_direction` (None: the method's
    default). Inputs are validated once; the steps run jitted on device (`train_step`).
    Predictions: `predict` with the empirical operator at initialization, and with the
    infinite-width operator (analytic kernels) started from the network's own outputs; where the
    infinite-width operator has no test side (unit-wise) the test prediction is the empirical one.
    Any loss other than MSE goes to `ntkngd.ce_engine.train_ce` (the same `TrainLog`, with the
    per-step isotropy fields filled; loss_options: lr_fraction, analytic); with MSE any extra
    keyword is a TypeError. Accuracy follows the targets' class coding (`accuracy`; NaN for
    regression targets).
    """
    L = get_loss(loss)
    if L.identity_hessian:
        reject_loss_options(loss_options, L)
    if getattr(net, "is_serial", False):   # hook: stax serial networks
        from .serial_train import serial_train
        return serial_train(method, net, params, data, steps, lr, damping, L, **loss_options)
    if not L.identity_hessian or get_method(method).nonlinear:   # no fixed operator: per-step fit
        from .ce_engine import train_ce
        if L.identity_hessian:       # MSE has a minimiser: the full step 1 / alpha_fit(t = 0)
            loss_options.setdefault("lr_fraction", 1.0)
        return train_ce(method, net, params, data, steps, lr, damping, loss=L, **loss_options)
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    m = get_method(method)
    damping = _check_damping(damping)
    xtr = _checks.inputs(data[0], "x_train")
    dense = empirical.dense_params(net, params, xtr.shape[1])
    ytr = L.validate(data[1], "y_train", xtr.shape[0], net.out_dim)
    xte = _checks.inputs(data[2], "x_test", dim=xtr.shape[1])
    yte = L.validate(data[3], "y_test", xte.shape[0], net.out_dim)
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    K0 = empirical.empirical_kernels(net, params, xtr, xte)
    rho = float(m.resolve_damping(K0, damping))
    op_emp = operator(m, K0, rho)
    lr = op_emp.lr if lr is None else lr
    dtype = empirical.param_dtype(dense)
    xj, yj, xtj = (jnp.asarray(a, dtype) for a in (xtr, ytr, xte))
    f0 = np.asarray(empirical._forward(net, dense, xj), np.float64)
    f0t = np.asarray(empirical._forward(net, dense, xtj), np.float64)
    pe_tr, pe_te = _predictions(op_emp, f0, ytr, f0t, yte, lr, steps)
    Ka = analytic_kernels(net, xtr, xte)
    try:
        op_inf = operator(m, Ka, 0.0 if m.default_damping is not None else rho)
    except ValueError:     # no wide limit at this damping (damped diagonal Fisher): NaN
        op_inf = None
        pi_tr = pi_te = np.full(steps + 1, np.nan)
    if op_inf is not None:
        pi_tr, pi_te = _predictions(op_inf, f0, ytr, f0t, yte, lr, steps)
        if op_inf.test is None:
            pi_te = pe_te
    logs: dict[str, list] = {k: [] for k in ("tr", "te", "atr", "ate")}
    lr_j = jnp.asarray(lr, dtype)
    for t in range(steps + 1):
        if t > 0:
            dense = train_step(m, net, L, rho, dense, xj, yj, lr_j)
        f = f0 if t == 0 else np.asarray(empirical._forward(net, dense, xj), np.float64)
        ft = f0t if t == 0 else np.asarray(empirical._forward(net, dense, xtj), np.float64)
        log_step(logs, (f, ft), (ytr, yte), t, lr, m.name)
    return TrainLog(m.name, float(lr), rho, op_emp.alpha, np.arange(steps + 1),
                    *(np.asarray(logs[k]) for k in ("tr", "te", "atr", "ate")),
                    np.asarray(pe_tr), np.asarray(pe_te), np.asarray(pi_tr), np.asarray(pi_te))
