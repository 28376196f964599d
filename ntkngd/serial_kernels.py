"""Infinite-width per-layer NTK blocks of any `SerialNetwork`, through neural-tangents itself.

Let T_l be the NTK of the network in which only layers l..L are trained: run neural-tangents'
kernel recursion to just before trainable layer l, set the tangent kernel to zero there and run the
rest. Then the block of layer l (the NTK of the network with only layer l trained) is
    Theta_l = T_l - T_{l+1},   T_{L+1} = 0,   so   sum_l Theta_l = T_1 = the NTK.
The prefix of the recursion is shared, so the cost is at most L + 1 passes of `kernel_fn`.
Blocks are N x N factors of Theta_l (x) I_C (`kron_outputs=True`). `fwd_*` holds the layer's
output NNGP averaged over spatial positions (the dense forward kernel Q_l for a Dense layer; a
summary only for convolutions); `bwd_*` is not defined for serial networks and is NaN (K-FAC and
unit-wise on infinite-width serial kernels are refused by `serial_methods`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
from neural_tangents import stax
from neural_tangents._src.stax.requirements import Bool, get_req

from . import _checks
from .kernels import Kernels, _pad_rows
from .serial_network import SerialNetwork


class _Blocks(NamedTuple):
    blocks: jnp.ndarray   # (n1, n2, L)
    fwd: jnp.ndarray      # (n1, n2, L)
    nngp: jnp.ndarray     # (n1, n2)


def _spatial_mean(a: jnp.ndarray) -> jnp.ndarray:
    """(n1, n2, [H, H', W, W' | H, W]) -> (n1, n2): mean over the diagonal spatial positions."""
    while a.ndim > 2:
        if a.ndim >= 4 and a.shape[2] == a.shape[3] and a.ndim % 2 == 0:
            a = jnp.diagonal(a, axis1=2, axis2=3).mean(-1)
        else:
            a = a.mean(2)
    return a


def _output(k, what: str) -> jnp.ndarray:
    a = getattr(k, what)
    if a.ndim != 2:
        raise ValueError(f"the network's output kernel has shape {a.shape}: the output must be "
                         "(N, C); end a convolutional stack with global pooling or Flatten + Dense")
    return a


def _diagonal_spatial(net: SerialNetwork) -> bool:
    """Whether neural-tangents itself would track only spatially diagonal covariances for this
    network (its input requirement): the same choice keeps its exact diagonal formulas."""
    req = get_req(net.kernel_fn) or {}
    diag = req.get("diagonal_spatial")
    return bool(diag is not None and getattr(diag, "input", None) == Bool.YES)


def _run(layers: tuple, k) -> Any:
    for layer in layers:
        k = layer[2](k)
    return k


def tap_blocks(net: SerialNetwork, x1: jnp.ndarray, x2: Optional[jnp.ndarray]) -> _Blocks:
    """Theta_l, the layer outputs' mean NNGP and the output NNGP for inputs x1, x2 (x2 None: x1)."""
    k = stax.Identity()[2](x1, x2, diagonal_spatial=_diagonal_spatial(net))
    totals, fwd = [], []
    for i, layer in enumerate(net.layers):
        if i in net.trainable:
            rest = _run(net.layers[i:], k.replace(ntk=jnp.zeros_like(k.nngp)))
            totals.append(_output(rest, "ntk"))
        k = layer[2](k)
        if i in net.trainable:
            fwd.append(_spatial_mean(k.nngp))
    nngp = _output(k, "nngp")
    totals.append(jnp.zeros_like(nngp))
    blocks = [totals[l] - totals[l + 1] for l in range(net.depth)]
    return _Blocks(jnp.stack(blocks, -1), jnp.stack(fwd, -1), nngp)


def _blocks(net: SerialNetwork, x1, x2, batch_size: int) -> _Blocks:
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size and max(n1, n2) > batch_size:
        fn = nt.batch(lambda a, b: tap_blocks(net, a, b), batch_size=batch_size,
                      store_on_device=False)
        tile = batch_size * jax.local_device_count()
        out = fn(_pad_rows(x1, tile), None if x2 is None else _pad_rows(x2, tile))
        return _Blocks(*(jnp.asarray(v)[:n1, :n2] for v in out))
    return tap_blocks(net, x1, x2)


def serial_analytic_kernels(net: SerialNetwork, x_train: Any, x_test: Any = None,
                            batch_size: int = 0) -> Kernels:
    """Infinite-width per-layer kernels of a serial network (see the module docstring).
    Inputs NHWC images for convolutional networks; JAX's default float dtype."""
    dtype = jnp.zeros(()).dtype
    batch_size = _checks.non_negative_int(batch_size, "batch_size")
    xtr = jnp.asarray(net.check_inputs(x_train, "x_train"), dtype)
    train = _blocks(net, xtr, None, batch_size)
    mv = lambda a: jnp.moveaxis(a, -1, 0)   # noqa: E731
    nan_bwd = jnp.full_like(mv(train.blocks), jnp.nan)
    fields: dict[str, Any] = dict(
        blocks_train=mv(train.blocks), fwd_train=mv(train.fwd), bwd_train=nan_bwd,
        nngp_train=train.nngp, out_dim=net.out_dim, kron_outputs=True, network=net,
        input_dim=int(xtr[0].size))
    if x_test is not None:
        xte = jnp.asarray(net.check_inputs(x_test, "x_test", like=xtr), dtype)
        test = _blocks(net, xte, xtr, batch_size)
        fields.update(blocks_test=mv(test.blocks), fwd_test=mv(test.fwd),
                      bwd_test=jnp.full_like(mv(test.blocks), jnp.nan), nngp_test=test.nngp)
    _checks.finite_kernels({k: v for k, v in fields.items() if k.startswith(("blocks", "nngp"))},
                           np.asarray(xtr).reshape(xtr.shape[0], -1))
    return Kernels(**fields)
