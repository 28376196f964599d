"""Fully connected networks in NTK parameterization, built from neural-tangents `stax` layers.

Convention (docs/theory.md): with h_0 = x and M_0 = d,
    u_l = (W_std / sqrt(M_{l-1})) W_l h_{l-1} + b_std b_l,   h_l = phi(u_l),   f = u_L,
for l = 1..L, where "layer" means a layer with trainable parameters (W_l, b_l) and every entry of
W_l, b_l is drawn from N(0, 1). `b_std == 0` means the network has no bias.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import _checks

if TYPE_CHECKING:
    import jax.numpy as jnp


class _LazyStax:
    """neural_tangents.stax, imported on first use (keeps `ntkngd --help` and imports fast)."""

    def __getattr__(self, name: str) -> Any:
        from neural_tangents import stax as module
        return getattr(module, name)


stax = _LazyStax()

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


class StaxTriple:
    """neural-tangents' (init_fn, apply_fn, kernel_fn) of a network that lists its `stax_layers()`
    (shared by `Network` and `ntkngd.serial_network.SerialNetwork`)."""

    def stax(self):
        """The whole network as one neural-tangents (init_fn, apply_fn, kernel_fn) triple."""
        return stax.serial(*self.stax_layers())

    @property
    def init_fn(self):
        """neural-tangents init_fn(key, input_shape) -> (output_shape, params)."""
        return self.stax()[0]

    @property
    def apply_fn(self):
        """neural-tangents apply_fn(params, x) -> f(x), shape (N, C)."""
        return self.stax()[1]

    @property
    def kernel_fn(self):
        """neural-tangents infinite-width kernel_fn(x1, x2, get) of the whole network."""
        return self.stax()[2]


@dataclass(frozen=True)
class Network(StaxTriple):
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
    def gamma(self) -> float:
        """Fraction of hidden units with a non-zero derivative (1/2 for ReLU, 1 for erf, 0 for an
        activation that is identically zero, e.g. abrelu with a = b = 0)."""
        return float(_ACTIVATIONS[self.activation][1](**dict(self.activation_kwargs)))

    def activation_layer(self):
        """The neural-tangents (init_fn, apply_fn, kernel_fn) triple of the nonlinearity."""
        return _ACTIVATIONS[self.activation][0](**dict(self.activation_kwargs))

    def phi(self, u: jnp.ndarray) -> jnp.ndarray:
        """The elementwise nonlinearity, from neural-tangents' own apply_fn."""
        return self.activation_layer()[1]((), u)

    def dense_layer(self, l: int):
        """stax Dense triple of trainable layer l (1-based)."""
        width = self.layer_widths[l - 1]
        return stax.Dense(width, W_std=self.W_std, b_std=self.b_std if self.has_bias else None,
                          parameterization="ntk")

    def stax_layers(self) -> list:
        """[Dense_1, phi, Dense_2, phi, ..., Dense_L] as stax triples."""
        layers = []
        for l in range(1, self.depth + 1):
            layers.append(self.dense_layer(l))
            if l < self.depth:
                layers.append(self.activation_layer())
        return layers



def mlp(depth: int, width: int | Sequence[int] = 512, activation: str = "relu",
        W_std: float = 2 ** 0.5, b_std: float = 0.0, out_dim: int = 1,
        **activation_kwargs: Any) -> Network:
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
    return Network(depth, widths, activation, tuple(sorted(activation_kwargs.items())),
                   W_std, b_std, out_dim)
