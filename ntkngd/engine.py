"""Finite-width training in parameter space (any registered method, any loss), jitted.

Every method's update is  Delta theta = -lr * d  with  d[W_l; b_l] = Ht_l^T A_l, where the
per-sample signals A_l (N, M_l) come from the method's own dual solve (ntkngd/methods: the same
system as its function-space operator G, with the loss's output Hessian), Ht_l the layer inputs and
D_l the backprops of `ntkngd.empirical`. Linearized, J d = G(f) r (docs/theory.md), so one MSE step
at lr = 1/alpha converges for an isotropic G. `_core` (features, kernels, dual solve, contraction)
runs under jax.jit with method, network, loss and damping static: `ngd_direction` validates on the
host once and is itself jittable; `train_step` is the device-resident step `ntkngd.train` loops
over (ntkngd/training).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import optax

from . import _checks, empirical
from .kernels import Kernels
from .losses import Loss, get_loss
from .losses import mse as mse_loss
from .methods import BlockPattern, Method, get_method
from .network import Network

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
