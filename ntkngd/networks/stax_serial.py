"""The network protocol for any neural-tangents stax serial stack (Dense / Conv, elementwise
activations, pooling, Flatten; NHWC images): `serial(*layers)` and `cnn(...)`. Layer l = the l-th
trainable layer. Patches Ht_l[n, s, :] = d u_l[n, s, o] / d [W_l; b_l][:, o] by a VJP per position
and backprops D_l by a VJP per output, through neural-tangents' own apply_fn (any stride, padding,
parameterization). Infinite width: Theta_l = T_l - T_{l+1}, T_l the NTK with only layers l..L
trained (tangent kernel zeroed before layer l; T_{L+1} = 0); `fwd` holds each layer's output NNGP
averaged over diagonal positions (Q_l for Dense); the blocks do not factor, so no `bwd`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np

from .. import _checks
from .._lazy import LazyModule, lazy_jit
from .base import Network, per_layer_ints, stax

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")

TRAINABLE = ("Dense", "Conv")
ELEMENTWISE = ("ABRelu", "Erf", "Sin", "Exp", "Gaussian", "Gelu", "Rbf", "Sign", "Gabor",
               "Elementwise", "ElementwiseNumerical", "Monomial", "RectifiedMonomial",
               "Polynomial", "Hermite", "Identity")
POOLING = ("AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool")
SUPPORTED = TRAINABLE + ELEMENTWISE + POOLING + ("Flatten",)


def layer_kind(layer: Any, position: int) -> str:
    """The neural-tangents name of a stax triple; a clear error for anything else or unsupported."""
    if not (isinstance(layer, tuple) and len(layer) == 3 and all(callable(f) for f in layer)):
        raise TypeError(f"layer {position} must be a neural-tangents stax layer (an (init_fn, "
                        f"apply_fn, kernel_fn) triple), got {type(layer).__name__}")
    name = getattr(layer[1], "__name__", "?")
    if name not in SUPPORTED:
        raise ValueError(f"layer {position} ({name}) cannot be split into per-layer blocks by "
                         f"ntkngd; supported: trainable {TRAINABLE}, elementwise activations "
                         f"{ELEMENTWISE}, {POOLING + ('Flatten',)} (nest no stax.serial: pass "
                         "layers flat)")
    return name


def _closure(fn: Any, name: str) -> Any:
    """A value captured by a neural-tangents layer function (None if absent)."""
    seen = [fn]
    while seen:
        f = seen.pop()
        try:
            cv = inspect.getclosurevars(f).nonlocals
        except (TypeError, ValueError):
            continue
        if name in cv:
            return cv[name]
        seen += [v for v in cv.values() if inspect.isfunction(v)]
    return None


def _out_channels(layer: Any, kind: str, position: int) -> int:
    value = _closure(layer[0], "out_dim" if kind == "Dense" else "out_chan")
    if not isinstance(value, int):
        raise ValueError(f"layer {position} ({kind}): could not read its number of output "
                         "channels from neural-tangents")
    return value


@dataclass(frozen=True, eq=False)
class SerialNetwork(Network):
    """Stax layers split into L trainable ones (hashed by identity: a static jit argument).
    `input_rank`: 4 (NHWC) with conv or pooling, None (rank >= 2) after a leading Flatten, else 2."""

    layers: tuple
    kinds: tuple[str, ...]
    trainable: tuple[int, ...]
    layer_widths: tuple[int, ...]
    input_rank: int | None

    @property
    def depth(self) -> int:
        """L, the number of trainable (Dense / Conv) layers."""
        return len(self.trainable)

    @property
    def out_dim(self) -> int:
        """C, the output channels of the last trainable layer."""
        return self.layer_widths[-1]

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden widths (output channels) M_1..M_{L-1} of the trainable layers."""
        return self.layer_widths[:-1]

    def stax_layers(self) -> list:
        """The stax layers, in order."""
        return list(self.layers)

    def check_inputs(self, x: Any, name: str = "x", params: Any = None, like: Any = None,
                     dtype: Any = None) -> np.ndarray:
        """Also: a size the layers map to (N, C) (cached) and the first conv's channels."""
        arr = _checks.as_array(x, name)
        rank_ok = arr.ndim >= 2 if self.input_rank is None else arr.ndim == self.input_rank
        if not rank_ok:
            want = "images (N, H, W, C) (NHWC)" if self.input_rank == 4 else "(N, d)"
            raise ValueError(f"{name} must be {want} for this network, got shape {arr.shape}")
        if like is not None and np.shape(like)[1:] != arr.shape[1:]:
            raise ValueError(f"{name} points have shape {arr.shape[1:]} but the training points "
                             f"{tuple(np.shape(like)[1:])}: every point must have the same shape")
        if params is not None:
            self._check_channels(arr, name, params)
        self._check_fit(arr, name, params)
        _checks.input_scale(arr, name, jnp.zeros(()).dtype if dtype is None else dtype)
        return arr

    def _check_channels(self, arr: np.ndarray, name: str, params: Any) -> None:
        w = params[self.trainable[0]][0]
        if self.kinds[self.trainable[0]] != "Conv" or np.ndim(w) != arr.ndim:
            return
        need = int(np.shape(w)[-2])                      # HWIO filters: input channels
        if arr.shape[-1] != need:
            hint = (f"; these look NCHW (channels first): use x.transpose(0, 2, 3, 1)"
                    if arr.ndim == 4 and arr.shape[1] == need else "")
            raise ValueError(f"{name} has {arr.shape[-1]} channels (last axis of NHWC images "
                             f"{arr.shape}) but the network's parameters take {need}{hint}")

    def _check_fit(self, arr: np.ndarray, name: str, params: Any) -> None:
        key = (tuple(arr.shape[1:]), None if params is None else tuple(
            (tuple(np.shape(a)), str(a.dtype)) for a in jax.tree_util.tree_leaves(params)))
        if key not in _FITS.setdefault(self, {}):
            try:
                _FITS[self][key] = _output_shape(self, key[0], params)
            except Exception as e:  # noqa: BLE001 - the layers' own shape errors, made one line
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise ValueError(f"{name} points of shape {arr.shape[1:]} do not fit the "
                                 f"network's layers (NHWC images; a k x k VALID convolution or "
                                 f"pooling needs at least k x k positions): {why}") from None
        out = _FITS[self][key]
        if len(out) != 2:
            raise ValueError(f"the network's output for {name} has shape (N,) + {out[1:]}; it "
                             "must be (N, C): end a convolutional stack with global pooling or "
                             "Flatten + Dense")

    @lazy_jit(static_argnums=0)
    def features(self, params: Sequence, x):
        """(f, Ht_l, D_l): patches by a VJP per position, backprops by a VJP per output."""
        hs = _run(self.layers, params, x)             # hs[i]: the input of layer i
        f = hs[-1]
        n, c = x.shape[0], f.shape[-1]
        hts, ds = [], []
        for i in self.trainable:
            u = hs[i + 1]
            _, vjp = jax.vjp(lambda u_, i=i: _run(self.layers[i + 1:], params[i + 1:], u_)[-1], u)
            eye = jnp.broadcast_to(jnp.eye(c, dtype=f.dtype)[:, None, :], (c, n, c))
            d = jax.vmap(lambda e: vjp(e)[0])(eye)                 # (C, N, *spatial, M_l)
            ds.append(jnp.moveaxis(d, 0, 1).reshape(n * c, -1, u.shape[-1]))
            hts.append(_patches(self.layers[i], *params[i], hs[i], u.shape))
        return f, tuple(hts), tuple(ds)

    def analytic_layers(self, x1, x2):
        """Theta_l = T_l - T_{l+1} from neural-tangents' recursion (module docstring)."""
        k = stax.Identity()[2](x1, x2, diagonal_spatial=_diagonal_spatial(self))
        totals, fwd = [], []
        for i, layer in enumerate(self.layers):
            if i in self.trainable:
                rest = k.replace(ntk=jnp.zeros_like(k.nngp))
                for later in self.layers[i:]:
                    rest = later[2](rest)
                totals.append(_output(rest, "ntk"))
            k = layer[2](k)
            if i in self.trainable:
                fwd.append(_spatial_mean(k.nngp))
        nngp = _output(k, "nngp")
        totals.append(jnp.zeros_like(nngp))
        blocks = [totals[l] - totals[l + 1] for l in range(self.depth)]
        return jnp.stack(blocks, -1), jnp.stack(fwd, -1), None, nngp


_FITS: dict = {}


def _run(layers, params, h) -> list:
    """[h, then every layer's output in order]."""
    outs = [h]
    for layer, p in zip(layers, params):
        h = layer[1](p, h)
        outs.append(h)
    return outs


def _patches(layer, W, b, h, out_shape):
    """Ht (N, S, k [+1]): d u[n, s, o] / d W[k, o] by a VJP per position, plus the bias column."""
    w1 = jnp.zeros(W.shape[:-1] + (1,), W.dtype)
    b1 = None if b is None else jnp.zeros(b.shape[:-1] + (1,), b.dtype)
    spatial = int(np.prod(out_shape[1:-1], dtype=int))
    eye = jnp.eye(spatial, dtype=h.dtype).reshape((spatial, 1) + tuple(out_shape[1:-1]) + (1,))

    def one(h1):
        _, vjp = jax.vjp(lambda w: layer[1]((w, b1), h1[None]), w1)
        return jax.vmap(lambda e: vjp(e)[0].reshape(-1))(eye)   # (S, k)

    ht = jax.vmap(one)(h)
    if b is not None:
        col = layer[1]((w1, jnp.ones_like(b1)), h).reshape(h.shape[0], spatial, 1)
        ht = jnp.concatenate([ht, col], -1)
    return ht


def _output_shape(net: SerialNetwork, point: tuple, params) -> tuple:
    """The output shape for one point (jax.eval_shape); a clear error where no positions remain."""
    leaves = [] if params is None else jax.tree_util.tree_leaves(params)
    x = jax.ShapeDtypeStruct((1,) + point, leaves[0].dtype if leaves else jnp.zeros(()).dtype)
    if params is None:
        params = jax.eval_shape(lambda k: net.init_fn(k, x.shape)[1], jax.random.PRNGKey(0))
    shapes = [tuple(o.shape) for o in jax.eval_shape(partial(_run, net.layers), params, x)[1:]]
    for i, shape in enumerate(shapes):
        if any(d <= 0 for d in shape[1:]):
            raise ValueError(f"layer {i} ({net.kinds[i]}) would output shape (N,) + "
                             f"{shape[1:]}: no positions left")
    return shapes[-1]


def _spatial_mean(a):
    """(n1, n2, [H, H', W, W' | H, W]) -> (n1, n2): mean over the diagonal spatial positions."""
    while a.ndim > 2:
        if a.ndim >= 4 and a.shape[2] == a.shape[3] and a.ndim % 2 == 0:
            a = jnp.diagonal(a, axis1=2, axis2=3).mean(-1)
        else:
            a = a.mean(2)
    return a


def _output(k, what: str):
    a = getattr(k, what)
    if a.ndim != 2:
        raise ValueError(f"the network's output kernel has shape {a.shape}: the output must be "
                         "(N, C); end a convolutional stack with global pooling or Flatten + Dense")
    return a


def _diagonal_spatial(net: SerialNetwork) -> bool:
    """Whether neural-tangents tracks only spatially diagonal covariances here (its own choice)."""
    from neural_tangents._src.stax.requirements import Bool, get_req
    diag = (get_req(net.kernel_fn) or {}).get("diagonal_spatial")
    return bool(diag is not None and getattr(diag, "input", None) == Bool.YES)


def serial(*layers: Any) -> SerialNetwork:
    """A network from stax layers (`SUPPORTED`); the output must be (N, C): after a last
    convolution only elementwise or global pooling layers (checked when applied)."""
    if len(layers) == 1 and isinstance(layers[0], list):
        layers = tuple(layers[0])
    kinds = tuple(layer_kind(layer, i) for i, layer in enumerate(layers))
    trainable = tuple(i for i, k in enumerate(kinds) if k in TRAINABLE)
    if not trainable:
        raise ValueError(f"the network has no trainable layer (Dense or Conv): {list(kinds)}")
    widths = tuple(_out_channels(layers[i], kinds[i], i) for i in trainable)
    convs = [_closure(layers[i][1], "filter_shape") for i in trainable if kinds[i] == "Conv"]
    conv_rank = 2 + (len(convs[0]) if convs and convs[0] is not None else 2)
    rank = conv_rank if convs or any(k in POOLING for k in kinds) else 2
    if not convs and "Flatten" in kinds[:trainable[0]]:
        rank = None        # Flatten first: images of any rank, or vectors
    return SerialNetwork(tuple(layers), kinds, trainable, widths, rank)


_ACTS = {"relu": "Relu", "erf": "Erf", "gelu": "Gelu", "identity": "Identity"}


def cnn(channels: int | Sequence[int] = 64, depth: int = 2, kernel: int = 3,
        activation: str = "relu", W_std: float = 2 ** 0.5, b_std: float | None = None,
        out_dim: int = 1, padding: str = "SAME", strides: int = 1) -> SerialNetwork:
    """`depth` k x k convolutions (NTK parameterization) with `activation`, global average pooling
    and a dense readout to `out_dim`: L = depth + 1 trainable layers. b_std None: no bias."""
    depth = _checks.positive_int(depth, "depth")
    _checks.choice(activation, "activation", _ACTS)
    kernel = _checks.positive_int(kernel, "kernel")
    strides = _checks.positive_int(strides, "strides")
    _checks.choice(padding, "padding", ("SAME", "VALID", "CIRCULAR"))
    chans = per_layer_ints(channels, depth, "channels", f"{depth} integers")
    layers: list = []
    for c in chans:
        layers += [stax.Conv(c, (kernel, kernel), strides=(strides, strides), padding=padding,
                             W_std=W_std, b_std=b_std, parameterization="ntk"),
                   getattr(stax, _ACTS[activation])()]
    layers += [stax.GlobalAvgPool(), stax.Dense(_checks.positive_int(out_dim, "out_dim"),
                                                W_std=W_std, b_std=b_std, parameterization="ntk")]
    return serial(*layers)
