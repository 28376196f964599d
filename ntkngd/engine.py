"""Finite-width training in parameter space, beside the function-space predictions.

Every method's parameter update is  Delta theta = -lr * d  with  d[W_l; b_l] = Ht_l^T A_l, where the
per-sample signals A_l (N, M_l) come from the method's own dual vectors (ntkngd/methods/*: the same
solves as its function-space operator G), Ht_l the layer inputs and D_l the backprops of
`ntkngd.empirical`. Linearized, J d = G g with g = f(X) - Y (THEORY.md), so one step at lr = 1/alpha
converges for an isotropic G. Loss = 1/(2N) sum_n ||f(x_n) - y_n||^2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import jax.numpy as jnp
import numpy as np
import optax

from . import _checks, empirical
from .dynamics import mse, predict
from .kernels import Kernels, analytic_kernels
from .methods import BlockPattern, canonical
from .methods import block, kfac, unitwise
from .network import Network
from .operators import operator

Method = Union[str, BlockPattern]

# name -> (Kernels, damping, residual g (N, C)) -> per-layer signals A_l (N, M_l)
SIGNALS: dict[str, Callable] = {
    "gd": block.gd_signals,
    "exact": block.exact_signals,
    "block_diagonal": block.block_diagonal_signals,
    "block_tridiagonal": block.block_tridiagonal_signals,
    "kfac": kfac.signals,
    "unit_wise": unitwise.signals,
}


def _method_key(method: Method) -> Method:
    if isinstance(method, BlockPattern):
        return method
    return canonical(method)


def _damping(method: Method, K: Kernels, damping: Optional[float]) -> float:
    """damping=None: unit_wise -> unitwise.default_damping(K) (the one unit-wise rule); every
    other method -> 0 (the rho -> 0 limit)."""
    if damping is None:
        return unitwise.default_damping(K) if method == "unit_wise" else 0.0
    return _checks.non_negative(damping, "damping")


def signals(method: Method, K: Kernels, damping: float, g: np.ndarray) -> list:
    """Per-layer signals A_l of `method` on finite-width kernels K for residual g (N, C)."""
    key = _method_key(method)
    if isinstance(key, BlockPattern):
        return block.pattern_signals(K, key, damping, g)
    return SIGNALS[key](K, damping, g)


def _batch(net: Network, params: Any, x: Any, y: Any):
    x = _checks.inputs(x, "x_train")
    dense = empirical.dense_params(net, params, x.shape[1])
    y = _checks.outputs(y, "y_train", x.shape[0], net.out_dim)
    return x, y, dense


def _direction(method: Method, net: Network, params: Any, x: Any, y: Any,
               damping: Optional[float]):
    """(direction pytree, kernels, residual, damping used) at `params`."""
    key = _method_key(method)
    x, y, dense = _batch(net, params, x, y)
    K, f = empirical.kernels_and_outputs(net, params, x)
    g = np.asarray(f, np.float64) - y
    rho = _damping(key, K, damping)
    dws = empirical.contract(K.layer_inputs_train, signals(key, K, rho, g))
    return empirical.split_update(net, dense, dws), K, g, rho


def ngd_direction(method: Method, net: Network, params: Any, x_train: Any, y_train: Any,
                  damping: Optional[float] = None) -> list:
    """Parameter-space direction d (a pytree like params) of `method` on the batch (X, Y).

    One step is params - lr * d; for NGD-type methods lr = 1/alpha (`ntkngd.operator(method,
    ntkngd.empirical_kernels(...)).lr`). `method`: gd (d = the loss gradient), exact,
    block_diagonal, block_tridiagonal, kfac, unit_wise, or ntkngd.block_pattern(S). damping rho >= 0
    is the parameter-space Tikhonov damping (F + rho I; factored sqrt(rho) for K-FAC); None gives
    0, except unit_wise: `methods.unitwise.default_damping`. Dual solves run in
    float64 numpy; the features and the contraction run jitted in the parameters' dtype.
    """
    return _direction(method, net, params, x_train, y_train, damping)[0]


def ngd_transform(method: Method, net: Network,
                  damping: Optional[float] = None) -> optax.GradientTransformationExtraArgs:
    """An optax transformation that replaces the incoming updates by `ngd_direction` on the batch
    passed as extra arguments: `update(grads, state, params, x=..., y=...)`. Chain it with
    `optax.scale(-lr)`. The incoming grads are ignored (the direction is rebuilt from the batch);
    not jit-compatible (the dual solves run on the host in float64).
    """
    key = _method_key(method)
    if damping is not None:
        _checks.non_negative(damping, "damping")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, x=None, y=None, **extra):
        del updates, extra
        if params is None or x is None or y is None:
            raise ValueError("ngd_transform needs params and the batch: update(grads, state, "
                             "params, x=x_batch, y=y_batch)")
        return ngd_direction(key, net, params, x, y, damping), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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


def accuracy(f: np.ndarray, y: np.ndarray) -> float:
    """Sign agreement for C = 1 (+-0.5 targets), argmax agreement for C > 1."""
    if f.shape[-1] == 1:
        return float(np.mean(np.sign(f[:, 0]) == np.sign(y[:, 0])))
    return float(np.mean(np.argmax(f, 1) == np.argmax(y, 1)))


@dataclass(frozen=True)
class TrainLog:
    """Per step t = 0..T: measured train/test loss and accuracy of the finite network, and the
    losses predicted by `ntkngd.predict` from the empirical kernels at initialization (`pred_emp_*`)
    and from the infinite-width analytic kernels with the network's own f_0 (`pred_inf_*`; NaN where
    that method has no infinite-width test operator)."""

    method: str
    lr: float
    damping: float
    alpha: float
    step: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    pred_emp_train_loss: np.ndarray
    pred_emp_test_loss: np.ndarray
    pred_inf_train_loss: np.ndarray
    pred_inf_test_loss: np.ndarray

    def table(self) -> str:
        head = (f"{self.method}: lr {self.lr:.6g}, damping {self.damping:.3g}, measured alpha "
                f"(empirical operator) {self.alpha:.6g}\n"
                f"{'step':>4} {'train':>11} {'pred emp':>11} {'pred inf':>11} {'test':>11} "
                f"{'pred emp':>11} {'pred inf':>11} {'acc tr':>7} {'acc te':>7}")
        rows = [f"{int(t):>4} {a:11.4e} {b:11.4e} {c:11.4e} {d:11.4e} {e:11.4e} {f:11.4e} "
                f"{g:7.3f} {h:7.3f}"
                for t, a, b, c, d, e, f, g, h in zip(
                    self.step, self.train_loss, self.pred_emp_train_loss, self.pred_inf_train_loss,
                    self.test_loss, self.pred_emp_test_loss, self.pred_inf_test_loss,
                    self.train_acc, self.test_acc)]
        return "\n".join([head] + rows)


def _predictions(op, f0, y, f0t, yt, lr, steps):
    traj = predict(op, f0, y, f0t if op.test is not None else None, lr=lr, steps=steps,
                   y_test=yt if op.test is not None else None)
    test = traj.test_loss if traj.test_loss is not None else np.full(steps + 1, np.nan)
    return traj.train_loss, test


def train(method: Method, net: Network, params: Any, data: tuple, steps: int = 5,
          lr: Optional[float] = None, damping: Optional[float] = None, loss: str = "mse"):
    """T steps of `method` on a finite network, logged beside the function-space predictions.

    data = (x_train, y_train, x_test, y_test). lr=None uses the empirical operator's lr at
    initialization (1/alpha when isotropic). damping as in `ngd_direction` (None: 0, or the
    unit-wise default). Predictions: `predict` with the empirical operator at initialization, and
    with the infinite-width operator (analytic kernels) started from the network's own outputs; for
    unit_wise the infinite-width operator has no test side and its test prediction is the
    empirical one. loss="ce" trains with softmax cross-entropy instead (`ce_engine.train_ce`;
    one-hot targets, returns a `CETrainLog`).
    """
    if loss == "ce":          # cross-entropy: ntkngd.ce_engine.train_ce (lr default 0.5/alpha)
        from .ce_engine import train_ce
        return train_ce(method, net, params, data, steps, lr, damping)
    if loss != "mse":
        raise ValueError(f"unknown loss {loss!r}; choose 'mse' or 'ce'")
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    key = _method_key(method)
    xtr, ytr, dense = _batch(net, params, data[0], data[1])
    xte = _checks.inputs(data[2], "x_test", dim=xtr.shape[1])
    yte = _checks.outputs(data[3], "y_test", xte.shape[0], net.out_dim)
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    K0 = empirical.empirical_kernels(net, params, xtr, xte)
    rho = _damping(key, K0, damping)
    op_emp = operator(key, K0, rho)
    lr = op_emp.lr if lr is None else lr
    f0 = np.asarray(empirical.outputs(net, params, xtr), np.float64)
    f0t = np.asarray(empirical.outputs(net, params, xte), np.float64)
    pe_tr, pe_te = _predictions(op_emp, f0, ytr, f0t, yte, lr, steps)
    Ka = analytic_kernels(net, xtr, xte)
    op_inf = operator(key, Ka, 0.0 if key == "unit_wise" else rho)
    pi_tr, pi_te = _predictions(op_inf, f0, ytr, f0t, yte, lr, steps)
    if key == "unit_wise":
        pi_te = pe_te
    logs: dict[str, list] = {k: [] for k in ("tr", "te", "atr", "ate")}
    p = params
    for t in range(steps + 1):
        f = f0 if t == 0 else np.asarray(empirical.outputs(net, p, xtr), np.float64)
        ft = f0t if t == 0 else np.asarray(empirical.outputs(net, p, xte), np.float64)
        for k, v in (("tr", mse(f, ytr)), ("te", mse(ft, yte)), ("atr", accuracy(f, ytr)),
                     ("ate", accuracy(ft, yte))):
            logs[k].append(float(v))
        if t < steps:
            d = _direction(key, net, p, xtr, ytr, rho)[0]
            p = apply_update(p, d, lr)
    name = key.name if isinstance(key, BlockPattern) else key
    return TrainLog(name, float(lr), rho, op_emp.alpha, np.arange(steps + 1),
                    *(np.asarray(logs[k]) for k in ("tr", "te", "atr", "ate")),
                    np.asarray(pe_tr), np.asarray(pe_te), np.asarray(pi_tr), np.asarray(pi_te))
