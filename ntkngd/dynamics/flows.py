"""Integrators of the function-space dynamics of any operator (`FlowOperator`, or its `Core`): the
flow df/dtau = -lr G(f) x(f) with diffrax (Tsit5, PID step-size control) and the discrete map
f_{t+1} = f_t - lr G(f_t) x(f_t) with lax.fori_loop, x = H^+ r from the targets exactly
(`Core.from_targets`); jitted, in the dtype of f0 (MSE: `predict`'s closed forms, integrated)."""
from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .base import Core


def _core(op) -> Core:
    """An operator (host dataclass) -> its jit-friendly core; a core unchanged."""
    if isinstance(op, Core):
        return op
    if not hasattr(op, "core"):
        raise TypeError(f"op must be an ntkngd operator (ntkngd.operator), got {type(op).__name__}")
    return op.core()


def _velocity(core, y, lr, f, ft):
    d_train, d_test = core.from_targets(f, y)
    d_test = jnp.zeros_like(ft) if d_test is None or ft.shape[0] == 0 else d_test
    return -lr * d_train, -lr * d_test


@eqx.filter_jit
def _flow(core, f0, ft0, y, lr, ts, rtol, atol, max_steps):
    def field(t, state, args):
        return _velocity(core, y, lr, *state)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=ts[-1], dt0=None, y0=(f0, ft0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, dtmin=1e-12 * ts[-1],
                                                  force_dtmin=False),
        max_steps=max_steps, throw=False)
    return sol.ys, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


@eqx.filter_jit
def _steps(core, f0, ft0, y, lr, save_at):
    """The map up to max(save_at), keeping the states at the steps save_at (one compilation per
    number of saved points)."""
    def save(k, f, ft, bufs):
        hit = (save_at == k)[:, None, None]
        return jnp.where(hit, f[None], bufs[0]), jnp.where(hit, ft[None], bufs[1])

    bufs0 = save(0, f0, ft0, (jnp.zeros((len(save_at),) + f0.shape, f0.dtype),
                              jnp.zeros((len(save_at),) + ft0.shape, f0.dtype)))

    def body(k, carry):
        f, ft, bufs = carry
        df, dft = _velocity(core, y, lr, f, ft)
        f, ft = f + df, ft + dft
        return f, ft, save(k + 1, f, ft, bufs)

    _, _, bufs = jax.lax.fori_loop(0, jnp.max(save_at), body, (f0, ft0, bufs0))
    return bufs


def _state(f0_train, y_train, f0_test):
    """(f0, f0' ((0, C) without test points), y) in the dtype of f0 (at least float32)."""
    f0 = jnp.asarray(f0_train)
    dtype = jnp.result_type(f0.dtype, jnp.float32)
    ft = jnp.zeros((0, f0.shape[-1]), dtype) if f0_test is None else jnp.asarray(f0_test, dtype)
    return f0.astype(dtype), ft, jnp.asarray(y_train, dtype)


def _tolerance(v, name: str) -> float:
    try:
        return _checks.positive(v, name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}") from None


def integrate_flow(op: Any, f0_train: Any, y_train: Any, f0_test: Any = None, *,
                   lr: float = 1.0, times: Any, rtol: float = 1e-9, atol: float = 1e-11,
                   max_steps: int = 100_000):
    """Integrate df/dtau = -lr G(f) x(f), df'/dtau = -lr G'(f) x(f) with diffrax (Tsit5, PID) at
    the sorted finite times (checked by `ntkngd.predict`): (t, train (T, N, C), test or None,
    solver steps). A failed solve (singular system, non-finite field, max_steps) is a ValueError
    naming the cause."""
    t = np.asarray(times, np.float64)
    notes = " ".join(getattr(op, "notes", ()) or ())
    core = _core(op)
    rtol, atol = _tolerance(rtol, "rtol"), _tolerance(atol, "atol")
    f0, ft0, y = _state(f0_train, y_train, f0_test)
    dtype = f0.dtype
    if t[-1] == 0:
        tr = jnp.broadcast_to(f0, (len(t),) + f0.shape)
        te = jnp.broadcast_to(ft0, (len(t),) + ft0.shape)
        n_steps = 0
    else:
        (tr, te), n_steps, ok = _flow(core, f0, ft0, y, jnp.asarray(lr, dtype),
                                      jnp.asarray(t, dtype), jnp.asarray(rtol, dtype),
                                      jnp.asarray(atol, dtype),
                                      _checks.positive_int(max_steps, "max_steps"))
        if not bool(ok) or not bool(jnp.all(jnp.isfinite(tr))):
            raise ValueError(
                "the function-space flow could not be integrated: the field became singular or "
                "non-finite along the trajectory, or max_steps was reached (for a damped "
                "indefinite pattern such as BTD with L >= 3, F_S + rho I turns singular as the "
                "softmax saturates; use damping = 0, the minimum-norm limit)"
                + (f". Operator notes: {notes}" if notes else ""))
    return (t, np.asarray(tr), None if f0_test is None else np.asarray(te), int(n_steps))


def iterate_steps(op: Any, f0_train: Any, y_train: Any, f0_test: Any = None, *,
                  lr: float = 1.0, steps: Any):
    """The discrete map f_{t+1} = f_t - lr G(f_t) x(f_t), f'_{t+1} = f'_t - lr G'(f_t) x(f_t) at
    the step indices steps >= 0 (as `ntkngd.predict` checks them). Returns (t, train, test)."""
    core = _core(op)
    t = np.asarray(steps, int)
    f0, ft0, y = _state(f0_train, y_train, f0_test)
    tr, te = _steps(core, f0, ft0, y, jnp.asarray(lr, f0.dtype), jnp.asarray(t))
    tr, te = np.asarray(tr), np.asarray(te)
    return t.astype(np.float64), tr, None if f0_test is None else te
