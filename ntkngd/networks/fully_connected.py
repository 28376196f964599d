"""Fully connected networks in NTK parameterization: the closed-form network protocol.

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
from .base import Network, per_layer_ints, stax

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")


# name -> (stax constructor taking the user's keyword arguments, fraction of units with a non-zero
# derivative at a typical point, gamma in docs/theory.md's unit-wise section; abrelu
# phi = a min(u, 0) + b max(u, 0) moves on both half-lines (1), one (1/2) or none (0))
_ACTIVATIONS: dict[str, tuple[Callable[..., Any], Callable[..., float]]] = {
    "relu": (lambda: stax.Relu(), lambda: 0.5),
    "abrelu": (lambda a=0.0, b=1.0: stax.ABRelu(a, b),
               lambda a=0.0, b=1.0: ((a != 0.0) + (b != 0.0)) / 2.0),
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
        """Fraction of hidden units with phi' != 0 (ReLU 1/2, erf 1, abrelu a = b = 0: 0)."""
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
        """Ht = [W_std x / sqrt(M), b_std 1] (bias column only with a bias): Q_1 = Ht_1 Ht_1'^T.
        Also every layer's input h as the forward pass scales it."""
        ht = (self.W_std / float(np.sqrt(x.shape[1]))) * x   # Python float: keeps the dtype
        if self.has_bias:
            ht = jnp.concatenate([ht, jnp.full((x.shape[0], 1), self.b_std, x.dtype)], 1)
        return ht

    @lazy_jit(static_argnums=0)
    def features(self, params: Sequence, x):
        """(f, Ht_l, D_l): one forward pass with taps, the backprops by the closed recursion."""
        hts, phis_dot = [], []
        h, u = x, None
        dense = self.layer_params(params)
        for l, (W, b) in enumerate(dense, start=1):
            ht = self.first_layer_inputs(h)
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
        """neural-tangents' recursion tapped per layer: Q_l = the Dense NNGP, Kdot_l = phi's
        kernel_fn with ntk := 1. Not jitted: XLA fusion would turn the exact zero of prod - nngp^2
        on arc-cosine kernels' diagonal into round-off (~1e-8 relative after the square root)."""
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
    """An MLP with `depth` trainable layers; `width`: one integer (or integral float) or depth - 1
    of them; `activation` in `ACTIVATIONS`, its keyword arguments (e.g. leaky_relu's `alpha`)
    passed on; `b_std = 0`: no bias."""
    depth = _checks.positive_int(depth, "depth")
    out_dim = _checks.positive_int(out_dim, "out_dim")
    _checks.choice(activation, "activation", _ACTIVATIONS)
    widths = per_layer_ints(width, depth - 1, "width",
                            f"a list of depth - 1 = {depth - 1} hidden widths")
    W_std = _checks.positive(W_std, "W_std")
    b_std = _checks.non_negative(b_std, "b_std")
    try:
        _ACTIVATIONS[activation][0](**activation_kwargs)
    except TypeError as e:
        raise ValueError(f"bad keyword arguments for activation {activation!r}: {e}") from e
    return MLP(depth, widths, activation, tuple(sorted(activation_kwargs.items())),
               W_std, b_std, out_dim)
