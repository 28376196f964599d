"""Finite-width (empirical) per-layer kernels from real parameters, in the same `Kernels` container.

Conventions (docs/theory.md): u_l = (sigma_w / sqrt(M_{l-1})) W_l h_{l-1} + sigma_b b_l, f = u_L, with
W_l, b_l the raw neural-tangents parameters (entries N(0, 1) at initialization). For dense layer l
    Ht_l = [sigma_w h_{l-1} / sqrt(M_{l-1}),  sigma_b 1]   (N, M_{l-1} [+1])   layer input,
    D_l[(n, c), :] = df_c(x_n) / du_l                        (N C, M_l)        backprops,
so the Jacobian row of output (n, c) w.r.t. the augmented weight [W_l; b_l] is Ht_l[n]^T D_l[(n, c)]
and
    Theta_l = (D_l D_l^T) o (Q_l (x) 1 1^T),   Q_l = Ht_l Ht_l^T,
with sample-major output index n C + c (`kron_outputs=False`). One forward pass records Ht_l and
u_l; the C backward passes run as one batched product over the output one-hots. The full Jacobian
is never formed. A parameter update from per-sample signals A_l (N, M_l) is one contraction,
d[W_l; b_l] = Ht_l^T A_l (`contract`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from . import _checks
from ._lazy import LazyModule, lazy_jit
from .kernels import Kernels
from .linalg import serial_blas  # noqa: F401  (re-exported)
from .network import Network

jax = LazyModule("jax")            # imported on first use: `import ntkngd.methods` stays light
jnp = LazyModule("jax.numpy")
DenseParams = list  # [(W_1, b_1 or None), ..., (W_L, b_L or None)]


@lazy_jit
def _all_finite(tree) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])


def dense_params(net: Network, params: Any, input_dim: Optional[int] = None,
                 check_finite: bool = True) -> DenseParams:
    """Check that `params` (neural-tangents stax params of `net`) match the network and return the
    per-layer (W_l, b_l) pairs (b_l None without bias). Shapes: W_l (M_{l-1}, M_l), b_l (1, M_l)."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntkngd Network (from ntkngd.mlp), got {type(net).__name__}")
    if not isinstance(params, (list, tuple)):
        raise ValueError(f"params must be the list returned by net.init_fn (one entry per stax "
                         f"layer), got {type(params).__name__}")
    n_stax = 2 * net.depth - 1
    if len(params) != n_stax:
        raise ValueError(f"params has {len(params)} entries but a depth-{net.depth} network has "
                         f"{n_stax} stax layers (Dense, activation, ..., Dense)")
    out = []
    fan_in = input_dim
    for l in range(1, net.depth + 1):
        p = params[2 * (l - 1)]
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ValueError(f"params[{2 * (l - 1)}] (dense layer {l}) must be a (W, b) pair, got "
                             f"{type(p).__name__}")
        if l < net.depth and params[2 * l - 1] not in ((), []):
            raise ValueError(f"params[{2 * l - 1}] (activation after layer {l}) must be (), got "
                             f"{params[2 * l - 1]!r}")
        W, b = p
        W = jnp.asarray(W)
        width = net.layer_widths[l - 1]
        if W.ndim != 2 or W.shape[1] != width or (fan_in is not None and W.shape[0] != fan_in):
            want = f"({fan_in if fan_in is not None else 'M'}, {width})"
            raise ValueError(f"W of layer {l} has shape {tuple(W.shape)}, expected {want}")
        if net.has_bias:
            if b is None:
                raise ValueError(f"layer {l}: the network has a bias (b_std={net.b_std}) but "
                                 "params carry none")
            b = jnp.asarray(b)
            if b.shape not in ((1, width), (width,)):
                raise ValueError(f"b of layer {l} has shape {tuple(b.shape)}, expected (1, {width})")
            b = b.reshape(1, width)
        elif b is not None:
            raise ValueError(f"layer {l}: the network has no bias (b_std=0) but params carry one")
        out.append((W, b))
        fan_in = width
    if not check_finite:   # traced parameters (inside jax.jit): no host transfer
        return out
    finite = np.asarray(_all_finite(out))
    if not finite.all():
        names = [f"{n} of layer {l}" for l, (W, b) in enumerate(out, start=1)
                 for n, a in (("W", W), ("b", b)) if a is not None]
        bad = [n for n, ok in zip(names, finite) if not ok]
        raise ValueError(f"params contain NaN or inf: {', '.join(bad)}")
    return out


def param_dtype(dense: DenseParams):
    """The floating dtype of the (dense) parameters."""
    return jnp.result_type(dense[0][0].dtype, jnp.float32)


def _augment(net: Network, h: jnp.ndarray) -> jnp.ndarray:
    """Ht = [sigma_w h / sqrt(M), sigma_b 1]: the layer input as the forward pass scales it."""
    ht = net.W_std / jnp.sqrt(h.shape[1]) * h
    if net.has_bias:
        ht = jnp.concatenate([ht, jnp.full((h.shape[0], 1), net.b_std, h.dtype)], 1)
    return ht


def _weights(W: jnp.ndarray, b) -> jnp.ndarray:
    """The augmented weight [W; b] (M_{l-1} [+1], M_l)."""
    return W if b is None else jnp.concatenate([W, b], 0)


@lazy_jit(static_argnums=0)
def features(net: Network, dense: DenseParams, x: jnp.ndarray):
    """One forward pass with taps and the C batched backward passes.

    Returns (f (N, C), Ht tuple of (N, M_{l-1}[+1]), D tuple of (N C, M_l))."""
    hts, phis_dot = [], []
    h = x
    for l, (W, b) in enumerate(dense, start=1):
        ht = _augment(net, h)
        u = ht @ _weights(W, b)
        hts.append(ht)
        if l < net.depth:
            h, dphi = jax.jvp(net.phi, (u,), (jnp.ones_like(u),))   # phi(u), phi'(u)
            phis_dot.append(dphi)
    f = u
    n, c = x.shape[0], net.out_dim
    g = jnp.broadcast_to(jnp.eye(c, dtype=x.dtype), (n, c, c))     # df_c/du_L, (N, C, M_L)
    ds = [g]
    for l in range(net.depth - 1, 0, -1):   # df/du_l = (df/du_{l+1} W_{l+1}^T sigma_w/sqrt(M_l)) phi'
        W = dense[l][0]
        g = (g @ W.T) * (net.W_std / jnp.sqrt(W.shape[0])) * phis_dot[l - 1][:, None, :]
        ds.insert(0, g)
    return f, tuple(hts), tuple(d.reshape(n * c, -1) for d in ds)


@lazy_jit
def _grams(hts: Sequence[jnp.ndarray], ds: Sequence[jnp.ndarray], hts2, ds2):
    """Q_l = Ht Ht2^T (N, N2), B_l = D D2^T (NC, N2 C), Theta_l = B o (Q (x) 1 1^T)."""
    qs = jnp.stack([a @ b.T for a, b in zip(hts, hts2)])
    bs = jnp.stack([a @ b.T for a, b in zip(ds, ds2)])
    c = bs.shape[1] // qs.shape[1]
    qe = jnp.repeat(jnp.repeat(qs, c, 1), c, 2)
    return qs, bs, bs * qe


@lazy_jit
def contract(hts: Sequence[jnp.ndarray], signals: Sequence[jnp.ndarray]) -> tuple:
    """d[W_l; b_l] = Ht_l^T A_l for per-sample signals A_l (N, M_l): J_l^T v when
    A_l[n] = sum_c v[(n, c)] D_l[(n, c)] (a VJP, no Jacobian)."""
    return tuple(h.T @ a.astype(h.dtype) for h, a in zip(hts, signals))


def split_update(net: Network, dense: DenseParams, dws: Sequence[jnp.ndarray]) -> list:
    """Augmented per-layer updates -> a pytree shaped like the stax params."""
    out = []
    for l, ((W, b), dw) in enumerate(zip(dense, dws), start=1):
        dW = dw[:W.shape[0]].astype(W.dtype)
        db = None if b is None else dw[W.shape[0]:].reshape(1, -1).astype(b.dtype)
        out.append((dW, db))
        if l < net.depth:
            out.append(())
    return out


def empirical_kernels(net: Network, params: Any, x_train: Any, x_test: Any = None) -> Kernels:
    """Per-layer kernels of the finite network `net` at `params` (stax params from net.init_fn).

    Returns a `Kernels` with `kron_outputs=False`: blocks (L, NC, NC), fwd Q_l (L, N, N), bwd
    D D^T (L, NC, NC), test-train versions (L, N'C, NC) / (L, N', N), and the layer inputs Ht_l and
    backprops D_l (train and test) from which K-FAC and unit-wise operators are built. Computed in
    the parameters' dtype. Sample-major output index n C + c.
    """
    if getattr(net, "is_serial", False):   # hook: stax serial networks
        from .serial_empirical import serial_empirical_kernels
        return serial_empirical_kernels(net, params, x_train, x_test)
    return kernels_and_outputs(net, params, x_train, x_test)[0]


def kernels_and_outputs(net: Network, params: Any, x_train: Any,
                        x_test: Any = None) -> tuple[Kernels, jnp.ndarray]:
    """`empirical_kernels` and the training outputs f(X) (N, C) from the same forward pass."""
    xtr = _checks.inputs(x_train, "x_train")
    dense = dense_params(net, params, xtr.shape[1])
    dtype = param_dtype(dense)
    _checks.input_scale(xtr, "x_train", dtype)
    xtr = jnp.asarray(xtr, dtype)
    f, hts, ds = features(net, dense, xtr)
    qs, bs, blocks = _grams(hts, ds, hts, ds)
    fields: dict[str, Any] = dict(
        blocks_train=blocks, fwd_train=qs, bwd_train=bs, out_dim=net.out_dim, kron_outputs=False,
        network=net, input_dim=xtr.shape[1], layer_inputs_train=hts, backprops_train=ds)
    if x_test is not None:
        xte = _checks.inputs(x_test, "x_test", dim=xtr.shape[1])
        _checks.input_scale(xte, "x_test", dtype)
        xte = jnp.asarray(xte, dtype)
        _, hts_t, ds_t = features(net, dense, xte)
        qt, bt, blocks_t = _grams(hts_t, ds_t, hts, ds)
        fields.update(blocks_test=blocks_t, fwd_test=qt, bwd_test=bt, layer_inputs_test=hts_t,
                      backprops_test=ds_t)
    _checks.finite_kernels({k: fields.get(k) for k in ("blocks_train", "fwd_train", "bwd_train",
                                                       "blocks_test", "fwd_test", "bwd_test")},
                           np.asarray(xtr))
    return Kernels(**fields), f


def outputs(net: Network, params: Any, x: Any) -> jnp.ndarray:
    """Network outputs f(x) (N, C) at `params` (validated), in the parameters' dtype."""
    x = _checks.inputs(x, "x")
    dense = dense_params(net, params, x.shape[1])
    return _forward(net, dense, jnp.asarray(x, param_dtype(dense)))


@lazy_jit(static_argnums=0)
def _forward(net: Network, dense: DenseParams, x: jnp.ndarray) -> jnp.ndarray:
    h = x
    for l, (W, b) in enumerate(dense, start=1):
        u = _augment(net, h) @ _weights(W, b)
        h = net.phi(u) if l < net.depth else u
    return u


def dual_signals(ds: Sequence[jnp.ndarray], vs: Sequence[np.ndarray], out_dim: int) -> list:
    """A_l[n] = sum_c v_l[(n, c)] D_l[(n, c)]: the signals whose contraction is J_l^T v_l.

    ds: backprops D_l (N C, M_l); vs: dual vectors v_l (N C,) (sample-major)."""
    out = []
    for d, v in zip(ds, vs):
        n = d.shape[0] // out_dim
        vv = jnp.asarray(v).reshape(n, out_dim).astype(d.dtype)
        out.append(jnp.einsum("nc,ncm->nm", vv, d.reshape(n, out_dim, -1)))
    return out


def require_features(K: Kernels, what: str) -> None:
    """Raise a clear error when K lacks the finite-width layer inputs and backprops."""
    if K.layer_inputs_train is None or K.backprops_train is None:
        raise ValueError(f"{what} needs finite-width kernels with layer inputs and backprops "
                         "(ntkngd.empirical_kernels), not infinite-width analytic kernels")
