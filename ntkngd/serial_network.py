"""Networks from any neural-tangents `stax` serial stack of Dense / Conv layers, elementwise
activations, pooling and Flatten: `serial(*layers)` and the common-case builder `cnn(...)`.

"Layer l" (l = 1..L) means the l-th layer with trainable parameters (Dense or Conv); `depth` = L.
Images are NHWC (neural-tangents' default). Each trainable layer is affine in its parameters,
    u_l = lin_l(h_{l-1}; W_l) + b_l-term,
and neural-tangents' own apply_fn is used for everything (forward pass, layer inputs, parameter
Jacobians through JAX), so any stride, padding and parameterization the library supports works.
The layer kind is read from the name neural-tangents gives each layer's functions.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from neural_tangents import stax

from . import _checks
from .network import StaxTriple

TRAINABLE = ("Dense", "Conv")
ELEMENTWISE = ("ABRelu", "Erf", "Sin", "Exp", "Gaussian", "Gelu", "Rbf", "Sign", "Gabor",
               "Elementwise", "ElementwiseNumerical", "Monomial", "RectifiedMonomial",
               "Polynomial", "Hermite", "Identity")
STRUCTURAL = ("AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten")
SUPPORTED = TRAINABLE + ELEMENTWISE + STRUCTURAL


def layer_kind(layer: Any, position: int) -> str:
    """The neural-tangents name of a stax (init_fn, apply_fn, kernel_fn) triple; a clear error
    for anything else or for a layer this library cannot split into per-layer blocks."""
    if not (isinstance(layer, tuple) and len(layer) == 3 and all(callable(f) for f in layer)):
        raise TypeError(f"layer {position} must be a neural-tangents stax layer (an (init_fn, "
                        f"apply_fn, kernel_fn) triple), got {type(layer).__name__}")
    name = getattr(layer[1], "__name__", "?")
    if name not in SUPPORTED:
        raise ValueError(f"layer {position} ({name}) cannot be split into per-layer blocks by "
                         f"ntkngd; supported: trainable {TRAINABLE}, elementwise activations "
                         f"{ELEMENTWISE}, {STRUCTURAL} (nest no stax.serial: pass layers flat)")
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
    key = "out_dim" if kind == "Dense" else "out_chan"
    value = _closure(layer[0], key)
    if not isinstance(value, int):
        raise ValueError(f"layer {position} ({kind}): could not read its number of output "
                         "channels from neural-tangents")
    return value


@dataclass(frozen=True, eq=False)
class SerialNetwork(StaxTriple):
    """A serial stack of stax layers split into L trainable layers (hashed by identity, so it can
    be a static jit argument). `layer_widths` are the output channels M_1..M_L of the trainable
    layers (M_L = out_dim = C), `widths` the hidden ones M_1..M_{L-1} (as for `ntkngd.mlp`);
    `input_rank` is 4 (NHWC images) when the stack has a convolution, None (any rank >= 2) when
    a Flatten precedes the first trainable layer, else 2."""

    layers: tuple
    kinds: tuple[str, ...]
    trainable: tuple[int, ...]
    layer_widths: tuple[int, ...]
    input_rank: int | None

    is_serial = True   # read by the engine's dispatch hooks without importing this module

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

    @property
    def has_conv(self) -> bool:
        """Whether any trainable layer is a convolution."""
        return "Conv" in self.kinds

    def stax_layers(self) -> list:
        """The stax layers, in order."""
        return list(self.layers)

    def check_inputs(self, x: Any, name: str = "x", params: Any = None,
                     like: Any = None) -> np.ndarray:
        """Inputs as a float array of the rank the network expects (N, H, W, C) or (N, d) (any
        rank >= 2 when a Flatten comes before the first trainable layer), of a size the layers
        accept with an (N, C) output; with `params`, with the channels they take; with `like`
        (the training inputs), of the same per-point shape. One clear ValueError otherwise."""
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
        _checks.input_scale(arr, name)
        return arr

    def _check_channels(self, arr: np.ndarray, name: str, params: Any) -> None:
        i = self.trainable[0]
        if self.kinds[i] != "Conv" or not isinstance(params, (list, tuple)) or len(params) <= i:
            return
        w = params[i][0] if isinstance(params[i], (list, tuple)) and params[i] else None
        if w is None or np.ndim(w) != arr.ndim:
            return
        need = int(np.shape(w)[-2])                      # HWIO filters: input channels
        if arr.shape[-1] != need:
            hint = (f"; these look NCHW (channels first): use x.transpose(0, 2, 3, 1)"
                    if arr.ndim == 4 and arr.shape[1] == need else "")
            raise ValueError(f"{name} has {arr.shape[-1]} channels (last axis of NHWC images "
                             f"{arr.shape}) but the network's parameters take {need}{hint}")

    def _check_fit(self, arr: np.ndarray, name: str, params: Any) -> None:
        """Shape inference through the layers (jax.eval_shape: no computation; cached per
        network, point shape and parameter shapes)."""
        shapes = None if params is None else tuple(
            tuple(np.shape(a)) for p in params if isinstance(p, (list, tuple))
            for a in p if a is not None)
        try:
            out = _output_shape(self, tuple(arr.shape[1:]), shapes, params)
        except Exception as e:  # noqa: BLE001 - the layers' own shape errors, made one line
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"{name} points of shape {arr.shape[1:]} do not fit the network's "
                             f"layers (NHWC images; a k x k VALID convolution or pooling needs at "
                             f"least k x k positions): {reason}") from None
        if len(out) != 2:
            raise ValueError(f"the network's output for {name} has shape (N,) + {out[1:]}; it "
                             "must be (N, C): end a convolutional stack with global pooling or "
                             "Flatten + Dense")

    def check_params(self, params: Any) -> list:
        """stax params (from init_fn): one entry per layer; trainable layers carry (W, b or
        None)."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"params must be the list from net.init_fn with {len(self.layers)} "
                             f"entries (one per stax layer), got {got}")
        for i, (p, kind) in enumerate(zip(params, self.kinds)):
            if kind in TRAINABLE:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise ValueError(f"params[{i}] ({kind}) must be a (W, b) pair")
                leaves = [a for a in p if a is not None]
                if not all(np.all(np.isfinite(np.asarray(a))) for a in leaves):
                    raise ValueError(f"params[{i}] ({kind}) contain NaN or inf")
            elif p not in ((), []):
                raise ValueError(f"params[{i}] ({kind}) must be (), got {p!r}")
        return list(params)


_FITS: dict = {}


def _first_leaf(params):
    """The first array of a params pytree (its dtype keys the shape cache)."""
    for p in params:
        for a in (p if isinstance(p, (list, tuple)) else ()):
            if a is not None:
                return a
    return None


def _output_shape(net: SerialNetwork, point: tuple, shapes, params) -> tuple:
    """The network's output shape for one point of shape `point` (jax.eval_shape), cached by
    (network, point shape, parameter shapes)."""
    key = (id(net), point, shapes, None if params is None else
           str(getattr(_first_leaf(params), "dtype", "")))
    if key not in _FITS:
        import jax
        import jax.numpy as jnp
        leaves = [] if params is None else jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.zeros(()).dtype
        x = jax.ShapeDtypeStruct((1,) + point, dtype)
        if params is None:
            params = jax.eval_shape(lambda k: net.init_fn(k, x.shape)[1], jax.random.PRNGKey(0))

        def layer_outputs(ps, a):
            outs = []
            for layer, p in zip(net.layers, ps):
                a = layer[1](p, a)
                outs.append(a)
            return outs

        shapes_out = [tuple(o.shape) for o in jax.eval_shape(layer_outputs, params, x)]
        for i, shape in enumerate(shapes_out):
            if any(d <= 0 for d in shape[1:]):
                raise ValueError(f"layer {i} ({net.kinds[i]}) would output shape (N,) + "
                                 f"{shape[1:]}: no positions left")
        _FITS[key] = (net, shapes_out[-1])
    return _FITS[key][1]


def serial(*layers: Any) -> SerialNetwork:
    """A network from neural-tangents stax layers (Dense / Conv with any strides and padding,
    elementwise activations, AvgPool / SumPool / GlobalAvgPool / GlobalSumPool, Flatten).

    The output must be (N, C): after the last trainable layer only elementwise or global pooling
    layers may follow a convolution (checked when the network is applied)."""
    if len(layers) == 1 and isinstance(layers[0], (list,)):
        layers = tuple(layers[0])
    kinds = tuple(layer_kind(layer, i) for i, layer in enumerate(layers))
    trainable = tuple(i for i, k in enumerate(kinds) if k in TRAINABLE)
    if not trainable:
        raise ValueError(f"the network has no trainable layer (Dense or Conv): {list(kinds)}")
    widths = tuple(_out_channels(layers[i], kinds[i], i) for i in trainable)
    conv_rank = 4
    for i in trainable:
        if kinds[i] == "Conv":
            shape = _closure(layers[i][1], "filter_shape")
            conv_rank = 2 + (len(shape) if shape is not None else 2)
            break
    rank = conv_rank if "Conv" in kinds or any(k in ("AvgPool", "SumPool", "GlobalAvgPool",
                                                       "GlobalSumPool") for k in kinds) else 2
    if "Conv" not in kinds and "Flatten" in kinds[:trainable[0]]:
        rank = None        # Flatten first: images of any rank, or vectors
    return SerialNetwork(tuple(layers), kinds, trainable, widths, rank)


_ACTS = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "identity": stax.Identity}


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
    if isinstance(channels, (str, bytes)):
        raise TypeError(f"channels must be an integer or a list of {depth} integers, got "
                        f"{channels!r}")
    chans = (channels,) * depth if np.ndim(channels) == 0 else tuple(np.asarray(channels).tolist())
    if len(chans) != depth:
        raise ValueError(f"channels must be one integer or {depth} integers, got {len(chans)}")
    chans = tuple(_checks.positive_int(c, "channels") for c in chans)
    layers: list = []
    for c in chans:
        layers += [stax.Conv(c, (kernel, kernel),
                             strides=(strides, strides), padding=padding, W_std=W_std,
                             b_std=b_std, parameterization="ntk"), _ACTS[activation]()]
    layers += [stax.GlobalAvgPool(), stax.Dense(_checks.positive_int(out_dim, "out_dim"),
                                                W_std=W_std, b_std=b_std, parameterization="ntk")]
    return serial(*layers)
