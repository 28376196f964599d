"""Finite-width per-layer kernels of a `SerialNetwork` from real parameters, without full Jacobians.

A trainable layer (Dense or Conv) is affine in its parameters and shares them over the spatial
positions s of its output: u_l[n, s, o] = sum_k Ht_l[n, s, k] W_l[k, o] (+ Ht_l[n, s, bias] b_l[o]),
where the "patches" Ht_l[n, s, :] (the layer input around s, scaled as in the forward pass, with the
bias column) are read off neural-tangents' own apply_fn by one VJP per position (any stride,
padding and parameterization; a Dense layer has one position and Ht = [W_std h / sqrt(M), b_std]).
With the backprops D_l[(n, c), s, o] = df_c(x_n) / du_l[n, s, o] (one VJP per output c), the
Jacobian row of output (n, c) w.r.t. layer l is J_l[(n, c)] = sum_s Ht_l[n, s]^T D_l[(n, c), s] and
    Theta_l[(n, c), (n', c')]
        = sum_{s, s'} <Ht_l[n, s], Ht_l[n', s']> <D_l[(n, c), s], D_l[(n', c'), s']>.
Computed either in that spatial-Gram form or by forming the per-layer J_l (patches x backprops),
whichever is cheaper; the network's full Jacobian is never formed. Sample-major index n C + c.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .kernels import Kernels
from .serial_network import SerialNetwork

_JAC_BYTES = 256 * 2 ** 20


def _apply(layer, p, h):
    return layer[1](p, h)


def _patches(layer, W: jnp.ndarray, b, h: jnp.ndarray, out_shape) -> jnp.ndarray:
    """Ht (N, S, k [+1]): d u[n, s, o] / d W[k, o] by a VJP per position, plus the bias column."""
    w1 = jnp.zeros(W.shape[:-1] + (1,), W.dtype)
    b1 = None if b is None else jnp.zeros(b.shape[:-1] + (1,), b.dtype)
    spatial = int(np.prod(out_shape[1:-1], dtype=int))
    eye = jnp.eye(spatial, dtype=h.dtype).reshape((spatial, 1) + tuple(out_shape[1:-1]) + (1,))

    def one(h1):
        _, vjp = jax.vjp(lambda w: _apply(layer, (w, b1), h1[None]), w1)
        return jax.vmap(lambda e: vjp(e)[0].reshape(-1))(eye)   # (S, k)

    ht = jax.vmap(one)(h)
    if b is not None:
        col = _apply(layer, (w1, jnp.ones_like(b1)), h).reshape(h.shape[0], spatial, 1)
        ht = jnp.concatenate([ht, col], -1)
    return ht


@partial(jax.jit, static_argnums=0)
def features(net: SerialNetwork, params: Sequence, x: jnp.ndarray):
    """f (N, C), patches Ht_l (N, S_l, k_l [+1]) and backprops D_l (N C, S_l, M_l) per layer."""
    h, taps = x, []
    for i, layer in enumerate(net.layers):
        if i in net.trainable:
            taps.append(h)
        h = _apply(layer, params[i], h)
    f = h
    n, c = x.shape[0], f.shape[-1]
    hts, ds = [], []
    for l, i in enumerate(net.trainable):
        W, b = params[i]
        u = _apply(net.layers[i], params[i], taps[l])
        rest = lambda u_: _run_from(net, params, i + 1, u_)   # noqa: E731
        _, vjp = jax.vjp(rest, u)
        eye = jnp.broadcast_to(jnp.eye(c, dtype=f.dtype)[:, None, :], (c, n, c))
        d = jax.vmap(lambda e: vjp(e)[0])(eye)                 # (C, N, *spatial, M_l)
        d = jnp.moveaxis(d, 0, 1).reshape(n * c, -1, u.shape[-1])
        hts.append(_patches(net.layers[i], W, b, taps[l], u.shape))
        ds.append(d)
    return f, tuple(hts), tuple(ds)


def _run_from(net: SerialNetwork, params, start: int, h):
    for i in range(start, len(net.layers)):
        h = _apply(net.layers[i], params[i], h)
    return h


@jax.jit
def _gram_form(ht, d, ht2, d2):
    """Theta (m, m2) = sum_{s, t} <Ht[n, s], Ht2[n', t]> <D[a, s], D2[b, t]>."""
    n, n2 = ht.shape[0], ht2.shape[0]
    c = d.shape[0] // n
    q = jnp.einsum("ask,btk->asbt", ht, ht2)                    # (N, S, N2, S)
    bb = jnp.einsum("ase,bte->asbt", d, d2)                     # (NC, S, N2 C, S)
    qe = jnp.repeat(jnp.repeat(q, c, 0), c, 2)
    return jnp.einsum("asbt,asbt->ab", qe, bb)


def _layer_jacobian(ht, d):
    """J_l (m, k * M_l): row (n, c) = vec(sum_s Ht[n, s]^T D[(n, c), s]) (patches x backprops)."""
    n = ht.shape[0]
    c = d.shape[0] // n
    j = jnp.einsum("nsk,ncse->ncke", ht, d.reshape(n, c, *d.shape[1:]))
    return j.reshape(n * c, -1)


@jax.jit
def _jac_form(ht, d, ht2, d2):
    return _layer_jacobian(ht, d) @ _layer_jacobian(ht2, d2).T


def layer_block(ht, d, ht2, d2) -> jnp.ndarray:
    """Theta_l(x, x2) (m, m2) by the cheaper of the spatial-Gram and per-layer-Jacobian forms."""
    n, s, k = ht.shape
    m, e = d.shape[0], d.shape[-1]
    jac_bytes = (m + d2.shape[0]) * k * e * ht.dtype.itemsize
    gram_cost = (n * s) * (ht2.shape[0] * s) * k + (m * s) * (d2.shape[0] * s) * (e + 1)
    jac_cost = m * s * k * e + m * d2.shape[0] * k * e
    if jac_bytes <= _JAC_BYTES and jac_cost < gram_cost:
        return _jac_form(ht, d, ht2, d2)
    return _gram_form(ht, d, ht2, d2)


def _summaries(ht, d, ht2, d2):
    """Mean over positions of <Ht_s, Ht2_s> (N, N2) and <D_s, D2_s> (m, m2)."""
    return (jnp.einsum("ask,bsk->ab", ht, ht2) / ht.shape[1],
            jnp.einsum("ase,bse->ab", d, d2) / d.shape[1])


def _kernel_set(hts, ds, hts2, ds2):
    blocks = jnp.stack([layer_block(a, b, a2, b2) for a, b, a2, b2 in zip(hts, ds, hts2, ds2)])
    sums = [_summaries(a, b, a2, b2) for a, b, a2, b2 in zip(hts, ds, hts2, ds2)]
    return blocks, jnp.stack([q for q, _ in sums]), jnp.stack([bb for _, bb in sums])


def param_dtype(params: Sequence) -> Any:
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.result_type(leaves[0].dtype, jnp.float32)


def serial_kernels_and_outputs(net: SerialNetwork, params: Any, x_train: Any,
                               x_test: Any = None) -> tuple[Kernels, jnp.ndarray]:
    """Finite-width `Kernels` (kron_outputs=False; blocks (L, NC, NC)) and f(X) (N, C).

    fwd_* / bwd_* hold the position-averaged Grams of the patches and backprops (the dense Q_l and
    D D^T for Dense layers); layer_inputs_* are the patches Ht_l (N, S_l, k_l [+1]) and
    backprops_* the D_l (N C, S_l, M_l) from which KFC and channel-wise operators are built."""
    params = net.check_params(params)
    dtype = param_dtype(params)
    xtr = jnp.asarray(net.check_inputs(x_train, "x_train", params), dtype)
    f, hts, ds = features(net, params, xtr)
    _check_output(f, net)
    blocks, qs, bs = _kernel_set(hts, ds, hts, ds)
    fields: dict[str, Any] = dict(
        blocks_train=blocks, fwd_train=qs, bwd_train=bs, out_dim=net.out_dim, kron_outputs=False,
        network=net, input_dim=int(xtr[0].size), layer_inputs_train=hts, backprops_train=ds)
    if x_test is not None:
        xte = jnp.asarray(net.check_inputs(x_test, "x_test", params, like=xtr), dtype)
        _, hts_t, ds_t = features(net, params, xte)
        bt, qt, bbt = _kernel_set(hts_t, ds_t, hts, ds)
        fields.update(blocks_test=bt, fwd_test=qt, bwd_test=bbt, layer_inputs_test=hts_t,
                      backprops_test=ds_t)
    return Kernels(**fields), f


def serial_empirical_kernels(net: SerialNetwork, params: Any, x_train: Any,
                             x_test: Any = None) -> Kernels:
    return serial_kernels_and_outputs(net, params, x_train, x_test)[0]


def _check_output(f, net: SerialNetwork) -> None:
    if f.ndim != 2 or f.shape[1] != net.out_dim:
        raise ValueError(f"the network's output has shape {f.shape}; it must be (N, "
                         f"{net.out_dim}): end with global pooling or Flatten + Dense")


def serial_outputs(net: SerialNetwork, params: Any, x: Any) -> jnp.ndarray:
    """f(x) (N, C) in the parameters' dtype."""
    params = net.check_params(params)
    f = _jit_apply(net, params, jnp.asarray(net.check_inputs(x, "x", params), param_dtype(params)))
    _check_output(f, net)
    return f


@partial(jax.jit, static_argnums=0)
def _jit_apply(net, params, x):
    return net.apply_fn(params, x)
