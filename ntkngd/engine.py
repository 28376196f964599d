"""Finite-width training in parameter space (any registered method, any loss, any network), jitted.

Delta theta = -lr * d with the per-layer directions d[W_l; b_l] of the method's own solve (the
system of its function-space operator, with the loss's Hessian) from the network's features, so
that linearized J d = G(f) r (docs/theory.md). `jitted_direction` runs under jax.jit with method,
network, loss and damping static; `ngd_direction` validates on the host once (only the structure
when traced); `train_step` is one device-resident step (direction and update in one program,
as the benchmarks time it); `ntkngd.train` applies the direction with `apply_update`.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks
from .losses import Loss, get_loss
from .losses import mse as mse_loss
from .methods import BlockPattern, Method, get_method
from .networks import empirical
from .networks.base import Network, traced
from .networks.kernels import Kernels

MethodLike = Union[str, BlockPattern, Method]


def signals(method: MethodLike, K: Kernels, damping: float, g: Any) -> list:
    """Per-layer MSE signals A_l (N, S, M_l) of `method` on finite-width kernels K for residual
    g (N, C)."""
    g = jnp.asarray(g)
    return get_method(method).signals(K, damping, g, jnp.zeros_like(g), mse_loss)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def jitted_direction(method: Method, net: Network, loss: Loss, damping, params, x, y):
    """(direction pytree shaped like params, outputs f, damping used), all on device."""
    f, hts, ds = net.features(params, x)
    K = empirical.from_features(net, hts, ds, input_dim=int(np.prod(x.shape[1:])))
    rho = method.resolve_damping(K, damping)
    dws = method.directions(K, rho, f, y.astype(f.dtype), loss)
    return net.split_update(params, dws), f, jnp.asarray(rho, f.dtype)


def prepare(net: Network, params, x, y, loss: Loss):
    """(params, x, y) as device arrays in the parameters' dtype, checked once on the host (the
    parameters' structure only, when traced: jittable)."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntkngd Network (ntkngd.mlp, ntkngd.serial, ntkngd.cnn), "
                        f"got {type(net).__name__}")
    check = not traced(params, x, y)
    params, x = empirical.prepare(net, params, x, check=check)
    if check:
        y = loss.validate(y, "y_train", x.shape[0], net.out_dim)
    return params, x, jnp.asarray(y, x.dtype)


def check_damping(damping):
    """damping as a float >= 0 (None: the method's default); a traced value is a TypeError."""
    if isinstance(damping, jax.core.Tracer):
        raise TypeError("damping is a traced value: it selects the dual solve and must be a "
                        "concrete Python number under jax.jit (close over it, or mark it static "
                        "with static_argnums)")
    return None if damping is None else _checks.non_negative(damping, "damping")


def ngd_direction(method: MethodLike, net: Network, params: Any, x_train: Any, y_train: Any,
                  damping: Optional[float] = None, loss: Union[str, Loss] = "mse") -> list:
    """Parameter-space direction d (a pytree like params) of `method` on the batch (X, Y): one
    step is params - lr * d (NGD-type methods: lr = 1/alpha of the empirical operator). damping
    rho >= 0: Tikhonov F + rho I (factored sqrt(rho) for K-FAC); None: the method's default.
    Any network and loss; runs jitted in the parameters' dtype, and is jittable itself with
    method, net, damping and loss static (inputs are then not validated on the host)."""
    m, L = get_method(method), get_loss(loss)
    damping = check_damping(damping)
    params, x, y = prepare(net, params, x_train, y_train, L)
    return jitted_direction(m, net, L, damping, params, x, y)[0]


def ngd_transform(method: MethodLike, net: Network, damping: Optional[float] = None,
                  loss: Union[str, Loss] = "mse") -> optax.GradientTransformationExtraArgs:
    """An optax transformation that replaces the incoming updates by `ngd_direction` on the batch
    passed as extra arguments: `update(grads, state, params, x=..., y=...)`. Chain it with
    `optax.scale(-lr)`; works inside jax.jit for any network (the incoming grads are ignored:
    the direction is rebuilt from the batch).
    """
    m, L = get_method(method), get_loss(loss)
    damping = check_damping(damping)

    def update_fn(updates, state, params=None, *, x=None, y=None, **extra):
        del updates, extra
        if params is None or x is None or y is None:
            raise ValueError("ngd_transform needs params and the batch: update(grads, state, "
                             "params, x=x_batch, y=y_batch)")
        return ngd_direction(m, net, params, x, y, damping, L), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def train_step(method: Method, net: Network, loss: Loss, damping, params, x, y, lr):
    """One jitted step on the stax params of any network: (params - lr d, f (N, C) at params,
    the damping used). Inputs as `prepare` returns them; nothing is checked here."""
    d, f, rho = jitted_direction(method, net, loss, damping, params, x, y)
    return apply_update(params, d, lr), f, rho


def apply_update(params: Any, d: Any, lr: float) -> list:
    """params - lr * d for stax parameter lists (layers without parameters (); no bias None)."""
    out = []
    for p, dp in zip(params, d):
        if p in ((), []):
            out.append(p)
        else:
            out.append(tuple(None if a is None else a - jnp.asarray(lr, a.dtype) * b
                             for a, b in zip(p, dp)))
    return out
