"""Fully connected networks in NTK parameterization: the closed-form implementation of the
network protocol (ntkngd.networks.base).

Convention (docs/theory.md): h_0 = x, u_l = (W_std / sqrt(M_{l-1})) W_l h_{l-1} + b_std b_l,
h_l = phi(u_l), f = u_L, entries of W_l, b_l ~ N(0, 1) (`b_std == 0`: no bias). One position per
layer: Ht_l = [W_std h_{l-1} / sqrt(M_{l-1}), b_std], D_l = df/du_l. At infinite width
Theta_l = Q_l * B_l, B_L = 1, B_l = W_std^2 Kdot_l B_{l+1}, from neural-tangents' recursion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import _checks
from .._lazy import LazyModule, lazy_jit
from .base import Network, stax

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")


def _abrelu_gamma(a: float, b: float) -> float:
    """phi(u) = a min(u, 0) + b max(u, 0): phi' is non-zero on both half-lines (1), on one (1/2), or
    nowhere (0: phi is identically zero)."""
    return ((a != 0.0) + (b != 0.0)) / 2.0


# name -> (stax constructor taking the user's keyword arguments, fraction of units with a non-zero
# derivative at a typical point, gamma in docs/theory.md's unit-wise section)
_ACTIVATIONS: dict[str, tuple[Callable[..., Any], Callable[..., float]]] = {
    "relu": (lambda: stax.Relu(), lambda: 0.5),
    "abrelu": (lambda a=0.0, b=1.0: stax.ABRelu(a, b), lambda a=0.0, b=1.0: _abrelu_gamma(a, b)),
    "leaky_relu": (lambda alpha=0.01: stax.LeakyRelu(alpha), lambda alpha=0.01: 1.0 if alpha else 0.5),
    "abs": (lambda: stax.Abs(), lambda: 1.0),
    "erf": (lambda a=1.0, b=1.0, c=0.0: stax.Erf(a, b, c), lambda **_: 1.0),
    "sigmoid_like": (lambda: stax.Sigmoid_like(), lambda: 1.0),
    "gelu": (lambda approximate=False: stax.Gelu(approximate), lambda **_: 1.0),
    "sin": (lambda a=1.0, b=1.0, c=0.0: stax.Sin(a, b, c), lambda **_: 1.0),
    "cos": (lambda a=1.0, b=1.0, c=0.0: stax.Cos(a, b, c), lambda **_: 1.0),
    "exp": (lambda a=1.0, b=1.0: stax.Exp(a, b), lambda **_: 1.0),
    "gaussian": (lambda a=1.0, b=-1.0: stax.Gaussian(a, b), lambda **_: 1.0),
    "rbf": (lambda gamma=1.0: stax.Rbf(gamma), lambda **_: 1.0),
    "identity": (lambda: stax.Identity(), lambda: 1.0),
}

ACTIVATIONS: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))


@dataclass(frozen=True)
class MLP(Network):
    """An L-layer MLP in NTK parameterization (immutable and hashable, so it can be a static jit
    argument). `widths` are the hidden widths M_1..M_{L-1}; `out_dim` is C = M_L."""

    depth: int
    widths: tuple[int, ...]
    activation: str
    activation_kwargs: tuple[tuple[str, Any], ...]
    W_std: float
    b_std: float
    out_dim: int

    @property
    def has_bias(self) -> bool:
        """Whether the layers have a bias (b_std != 0)."""
        return self.b_std != 0.0

    @property
    def layer_widths(self) -> tuple[int, ...]:
        """Output widths of the L trainable layers: (M_1, ..., M_{L-1}, C)."""
        return self.widths + (self.out_dim,)

    @property
    def trainable(self) -> tuple[int, ...]:
        """Dense layers sit at 0, 2, ..., 2 (L - 1) of [Dense, phi, ..., Dense]."""
        return tuple(range(0, 2 * self.depth - 1, 2))

    @property
    def gamma(self) -> float:
        """Fraction of hidden units with a non-zero derivative (1/2 for ReLU, 1 for erf, 0 for an
        activation that is identically zero, e.g. abrelu with a = b = 0)."""
        return float(_ACTIVATIONS[self.activation][1](**dict(self.activation_kwargs)))

    def activation_layer(self):
        """The neural-tangents (init_fn, apply_fn, kernel_fn) triple of the nonlinearity."""
        return _ACTIVATIONS[self.activation][0](**dict(self.activation_kwargs))

    def phi(self, u):
        """The elementwise nonlinearity, from neural-tangents' own apply_fn."""
        return self.activation_layer()[1]((), u)

    def hidden_activation(self):
        """`phi` (the protocol's access to it: ntkngd.networks.base.Network)."""
        return self.phi

    def dense_layer(self, l: int):
        """stax Dense triple of trainable layer l (1-based)."""
        return stax.Dense(self.layer_widths[l - 1], W_std=self.W_std,
                          b_std=self.b_std if self.has_bias else None, parameterization="ntk")

    def stax_layers(self) -> list:
        """[Dense_1, phi, Dense_2, phi, ..., Dense_L] as stax triples."""
        layers = []
        for l in range(1, self.depth + 1):
            layers.append(self.dense_layer(l))
            if l < self.depth:
                layers.append(self.activation_layer())
        return layers

    def _expects_bias(self, l: int) -> bool:
        return self.has_bias

    def _check_weight(self, l: int, W, fan_in):
        width = self.layer_widths[l]
        if len(W.shape) != 2 or W.shape[1] != width or (fan_in is not None and W.shape[0] != fan_in):
            raise ValueError(f"W of layer {l + 1} has shape {tuple(W.shape)}, expected "
                             f"({fan_in if fan_in is not None else 'M'}, {width})")
        return width

    def check_inputs(self, x: Any, name: str = "x", params: Any = None, like: Any = None,
                     dtype: Any = None) -> np.ndarray:
        """(N, d) inputs (d from `like` or the first layer's W when given)."""
        dim = np.shape(like)[1] if like is not None else \
            (int(np.shape(params[0][0])[0]) if params is not None else None)
        arr = _checks.inputs(x, name, dim=dim)
        if dtype is not None:
            _checks.input_scale(arr, name, dtype)
        return arr

    def first_layer_inputs(self, x):
        """Ht_1 = [W_std x / sqrt(d), b_std 1] (the bias column only with a bias): Q_1(x, x') =
        Ht_1 Ht_1'^T."""
        return _augment(self, x)

    @lazy_jit(static_argnums=0)
    def features(self, params: Sequence, x):
        """(f, Ht_l, D_l): one forward pass with taps, the backprops by the closed recursion."""
        hts, phis_dot = [], []
        h, u = x, None
        dense = self.layer_params(params)
        for l, (W, b) in enumerate(dense, start=1):
            ht = _augment(self, h)
            u = ht @ (W if b is None else jnp.concatenate([W, b.reshape(1, -1)], 0))
            hts.append(ht[:, None, :])
            if l < self.depth:
                h, dphi = jax.jvp(self.phi, (u,), (jnp.ones_like(u),))   # phi(u), phi'(u)
                phis_dot.append(dphi)
        n, c = x.shape[0], self.out_dim
        g = jnp.broadcast_to(jnp.eye(c, dtype=x.dtype), (n, c, c))    # df_c/du_L, (N, C, M_L)
        ds = [g]
        for l in range(self.depth - 1, 0, -1):   # df/du_l = (df/du_{l+1} W_{l+1}^T s_w/sqrt(M_l)) phi'
            W = dense[l][0]
            g = (g @ W.T) * (self.W_std / jnp.sqrt(W.shape[0])) * phis_dot[l - 1][:, None, :]
            ds.insert(0, g)
        return u, tuple(hts), tuple(d.reshape(n * c, 1, -1) for d in ds)

    def analytic_layers(self, x1, x2):
        """neural-tangents' recursion tapped after every layer: Q_l is the dense layer's NNGP and,
        with ntk := 1 going into phi, its kernel_fn returns Kdot_l (the NTK itself is never
        needed: Theta_l = Q_l * B_l). Not jitted on purpose: XLA's fused arithmetic turns the
        exact zero of prod - nngp^2 on the diagonal of arc-cosine kernels into round-off, whose
        square root costs ~1e-8 relative."""
        act = self.activation_layer()
        fwd, kdot = [], []
        k: Any = x1, x2
        one = jnp.ones((), x1.dtype)
        for l in range(1, self.depth + 1):
            dense = self.dense_layer(l)
            k = dense[2](*k) if l == 1 else dense[2](k)
            fwd.append(k.nngp)
            if l < self.depth:
                k = act[2](k.replace(ntk=one))
                kdot.append(k.ntk)
                k = k.replace(ntk=None)
        blocks, fwd_s, bwd_s = _stack_layers(tuple(fwd), tuple(kdot), float(self.W_std) ** 2)
        return blocks, fwd_s, bwd_s, k.nngp


def _augment(net: MLP, h):
    """Ht = [W_std h / sqrt(M), b_std 1]: the layer input as the forward pass scales it."""
    ht = (net.W_std / float(np.sqrt(h.shape[1]))) * h   # Python float: keeps the dtype
    if net.has_bias:
        ht = jnp.concatenate([ht, jnp.full((h.shape[0], 1), net.b_std, h.dtype)], 1)
    return ht


@lazy_jit(static_argnums=2)
def _stack_layers(fwd: tuple, kdot: tuple, w_var: float):
    """Theta_l = Q_l B_l, Q_l and B_l (B_L = 1, B_l = W_std^2 Kdot_l B_{l+1}) stacked on the
    last axis in one jitted pass (products only: the same bits as eager jax.numpy)."""
    bwd = [jnp.ones_like(fwd[-1])]
    for l in range(len(fwd) - 1, 0, -1):
        bwd.insert(0, w_var * kdot[l - 1] * bwd[0])
    fwd_s, bwd_s = jnp.stack(fwd, -1), jnp.stack(bwd, -1)
    return fwd_s * bwd_s, fwd_s, bwd_s


def mlp(depth: int, width: int | Sequence[int] = 512, activation: str = "relu",
        W_std: float = 2 ** 0.5, b_std: float = 0.0, out_dim: int = 1,
        **activation_kwargs: Any) -> MLP:
    """An MLP with `depth` trainable layers (depth - 1 hidden layers of the given width(s)).

    `width` is one width for every hidden layer or a sequence of depth - 1 widths (Python, numpy or
    JAX integers, integral floats such as 64.0, or an array such as np.arange(...)). `activation` is one
    of `ACTIVATIONS` (neural-tangents' elementwise layers); extra keyword arguments go to its
    constructor (e.g. `alpha` for leaky_relu). `b_std = 0` builds a network without bias.
    """
    depth = _checks.positive_int(depth, "depth")
    out_dim = _checks.positive_int(out_dim, "out_dim")
    _checks.choice(activation, "activation", _ACTIVATIONS)
    if isinstance(width, str) or np.ndim(width) == 0:      # int, np.int64, 64.0, jnp.int32
        widths = (_checks.positive_int(width, "width"),) * (depth - 1)
    else:
        widths = tuple(np.asarray(width).tolist()) if hasattr(width, "shape") else tuple(width)
        if len(widths) != depth - 1:
            raise ValueError(f"width must be one integer or a list of depth - 1 = {depth - 1} "
                             f"hidden widths, got {len(widths)} widths")
    widths = tuple(_checks.positive_int(w, "width") for w in widths)
    W_std = _checks.positive(W_std, "W_std")
    b_std = _checks.non_negative(b_std, "b_std")
    try:
        _ACTIVATIONS[activation][0](**activation_kwargs)
    except TypeError as e:
        raise ValueError(f"bad keyword arguments for activation {activation!r}: {e}") from e
    return MLP(depth, widths, activation, tuple(sorted(activation_kwargs.items())),
               W_std, b_std, out_dim)
