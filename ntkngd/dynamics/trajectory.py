"""`predict`: function-space training dynamics of any operator, one `Trajectory` for every loss.

Linear flow (`Operator`, MSE, Loss = 1/(2N) sum_n ||f(x_n) - y_n||^2): closed forms (`closed_form`),
times up to t = inf (the fixed point); loss flow (`LossOperator`): the diffrax flow (times) or the
discrete map (steps) (`flows`). A step moves f by -lr G x and the flow is df/dtau = -lr G x, so
lr scales time: (tau, lr) gives the state of (lr tau, 1).
neural-tangents: `nt.predict.gradient_descent_mse(k, y, learning_rate=eta)` (df/dt = -eta Theta
(f - y) / (N C)) at time t is GD here (G = Theta / N) at tau = t with lr = eta / C;
`nt.predict.gradient_descent(loss, k, y, learning_rate=eta, trace_axes=(-1,))` with
loss(fx, y) = -sum(y * log_softmax(fx)) / N (df/dt = -eta Theta (p - y) / N) is GD's softmax
cross-entropy flow here with lr = eta, tau = t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import _checks
from ..losses import accuracy_or_nan
from .base import FlowOperator
from .closed_form import Propagator, fixed_point, iterate, iterate_cheaper, step_functions


@dataclass(frozen=True)
class Trajectory:
    """Outputs, losses and accuracies at the time points t (leading axis T). test / test_*: None
    without f0_test (test losses, accuracies: without y_test); accuracies NaN where the targets code
    no classes. continuous: the flow (times), not the map (steps). method, alpha (the theory's or
    None), damping: the operator's. solver_steps: diffrax steps of a loss flow (0 otherwise)."""

    t: np.ndarray
    train: np.ndarray
    train_loss: np.ndarray
    test: Optional[np.ndarray] = None
    test_loss: Optional[np.ndarray] = None
    continuous: bool = False
    lr: float = 1.0
    train_accuracy: Optional[np.ndarray] = None
    test_accuracy: Optional[np.ndarray] = None
    method: str = ""
    alpha: Optional[float] = None
    damping: float = 0.0
    solver_steps: int = 0


def mse(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1/(2N) sum ||f - y||^2 over the last two axes (points, outputs), in NumPy."""
    return 0.5 * np.sum((f - y) ** 2, axis=(-2, -1)) / f.shape[-2]


def _time_points(steps: Any, times: Any, continuous: bool) -> tuple[np.ndarray, bool]:
    """(t, continuous): times (continuous, sorted, >= 0, +inf allowed) or steps (an int T ->
    0..T, or step indices: integers unless continuous)."""
    if (steps is None) == (times is None):
        raise ValueError("give exactly one of steps (the discrete map) or times (the continuous "
                         "flow)")
    if times is not None:
        t = np.asarray(times, dtype=float) if np.ndim(times) == 1 else None
        if t is None or t.size == 0 or np.any(np.isnan(t)) or np.any(t == -np.inf):
            raise ValueError(f"times must be a non-empty 1-D sequence of time points >= 0 "
                             f"(np.inf for the t -> infinity limit), got {times!r}")
        continuous = True
    elif np.ndim(steps) == 0:
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"steps must be a positive integer (or a sequence of step indices), "
                             f"got {steps!r}")
        t = np.arange(_checks.positive_int(steps, "steps") + 1, dtype=float)
    else:
        t = _checks.as_array(steps, "steps", ndim=1).astype(float)
        if not continuous and (t.dtype == bool or np.any(t != np.round(t))):
            raise ValueError("steps must be non-negative integers (use times=... for "
                             "continuous time)")
    if np.any(t < 0):
        raise ValueError("time points must be >= 0")
    if np.any(np.diff(t) < 0):
        raise ValueError("time points must be sorted in increasing order")
    return t, continuous


def predict(op: FlowOperator, f0_train: Any, y_train: Any, f0_test: Any = None, *,
            lr: Optional[float] = None, steps: Any = None, times: Any = None,
            continuous: bool = False, y_test: Any = None, **solver) -> Trajectory:
    """Train (and test) outputs, losses and accuracies under the function-space dynamics of `op`
    (`ntkngd.operator`: an `Operator`, MSE, in closed form, or a `LossOperator`: the diffrax flow
    for times, the map for steps; solver: rtol, atol, max_steps). steps: an int T (t = 0..T) or
    step indices; times: flow times tau, np.inf (MSE only) the fixed point f = y + (I - G G^D) g,
    f' = f'_0 - G' G^D g (`closed_form.fixed_point`; ValueError for a growing mode); continuous=True
    runs the flow at the steps. lr: op.lr (1/alpha) for an `Operator`, else 1. Outputs (N, C) (1-D
    when C = 1); y_test adds test losses and accuracies."""
    if getattr(op, "is_sharded", False):   # hook: ntkngd.sharded (the operator predicts itself)
        return op.predict(f0_train, y_train, f0_test, lr=lr, steps=steps, times=times,
                          continuous=continuous, y_test=y_test, **solver)
    if not isinstance(op, FlowOperator):
        raise TypeError(f"op must be an ntkngd operator (ntkngd.operator), got "
                        f"{type(op).__name__}")
    t, continuous = _time_points(steps, times, continuous)
    if lr is None:
        lr = op.lr if op.linear else 1.0
    lr = _checks.positive(lr, "lr")
    L, n, c = op.loss, op.n_train, op.out_dim
    f0 = _checks.outputs(f0_train, "f0_train", n, c)
    y = L.validate(y_train, "y_train", n, c)
    if y_test is not None and f0_test is None:
        raise ValueError("y_test given without f0_test: give the test outputs f0_test too")
    f0t = yt = None
    if f0_test is not None:
        if op.test is None:
            raise ValueError(f"operator {op.name!r} has no test operator G' (kernels without "
                             "test points, or unit_wise on infinite-width kernels); call predict "
                             "without f0_test")
        f0t = _checks.outputs(f0_test, "f0_test", op.n_test, c)
        yt = None if y_test is None else L.validate(y_test, "y_test", op.n_test, c)
    n_steps = 0
    if op.linear:
        train, test = _linear(op, f0, y, f0t, t, lr, continuous)
    else:
        train, test, n_steps = _loss_flow(op, f0, y, f0t, t, lr, continuous, solver)
    value = mse if op.linear else (lambda f, target: np.asarray(L.value(f, target)))
    test_loss = test_acc = None
    if yt is not None:
        test_loss, test_acc = value(test, yt[None]), accuracy_or_nan(L, test, yt[None])
    return Trajectory(t, train, value(train, y[None]), test, test_loss, continuous, float(lr),
                      accuracy_or_nan(L, train, y[None]), test_acc, op.name,
                      op.alpha_theory if op.linear else op.alpha, float(op.damping), n_steps)


def _linear(op, f0, y, f0t, t, lr, continuous):
    """(train (T, N, C), test (T, N', C) or None) of the linear flow in closed form; the time
    points t = inf (at the end: t is sorted) take the fixed point."""
    n, c = f0.shape
    want_test = f0t is not None
    r0 = f0 - y
    r0v = r0 if op.kron_outputs else r0.reshape(-1, 1)
    tf = t[np.isfinite(t)]
    res = np.zeros((0,) + r0v.shape)
    dtest = np.zeros((0, op.test.shape[0], r0v.shape[1])) if want_test else None
    if tf.size and iterate_cheaper(op, tf, continuous):
        res, dtest = iterate(op, r0v, tf, lr, want_test)
    elif tf.size:
        phi, psi = step_functions(tf, lr, continuous)
        res, dtest = Propagator(op, r0v)(phi, psi, want_test)
    if tf.size < t.size:
        res_inf, dtest_inf = fixed_point(op, r0v)
        k = t.size - tf.size
        res = np.concatenate([res, np.repeat(res_inf[None], k, 0)])
        if want_test:
            dtest = np.concatenate([dtest, np.repeat(dtest_inf[None], k, 0)])
    train = y[None] + res.reshape(len(t), n, c)
    test = f0t[None] - dtest.reshape(len(t), -1, c) if want_test else None
    return train, test


def _loss_flow(op, f0, y, f0t, t, lr, continuous, solver):
    """(train, test or None, solver steps) of a loss flow: diffrax or the discrete map."""
    from .flows import integrate_flow, iterate_steps
    if np.isinf(t).any():
        raise ValueError(f"times=[..., np.inf] (the fixed point) is defined for the linear (MSE) "
                         f"flow; the {op.loss.name} flow has no fixed point at finite outputs")
    if continuous:
        _, tr, te, n_steps = integrate_flow(op, f0, y, f0t, lr=lr, times=t, **solver)
        return tr, te, n_steps
    if solver:
        raise TypeError(f"solver options {sorted(solver)} apply to the continuous flow (times=)")
    _, tr, te = iterate_steps(op, f0, y, f0t, lr=lr, steps=t.astype(int))
    return tr, te, 0
