"""The network protocol: what every method, loss and training loop needs from an architecture.

The L trainable layers (Dense or Conv) of a stax stack are affine in their parameters, shared over
the positions s: u_l[n, s, o] = sum_k Ht_l[n, s, k] [W_l; b_l][k, o], with Ht_l the input patches
(scaled as the forward pass scales them, bias column last); a dense layer has S = 1. With the
backprops D_l[(n, c), s, o] = df_c(x_n) / du_l[n, s, o] (rows n C + c), the Jacobian row is
J_l[(n, c)] = sum_s Ht_l[n, s]^T D_l[(n, c), s]. Every method works from these, in one shape:
    features(params, x) -> (f (N, C), Ht_l (N, S_l, k_l), D_l (N C, S_l, M_l))    jittable
    analytic_layers(x1, x2) -> per-layer infinite-width blocks (ntkngd.networks.kernels)
    check_params(params)    -> the (W, b) structure (jittable; NaN check when concrete)
    split_update(params, [d[W_l; b_l]]) -> a pytree shaped like params.
`ntkngd.mlp` (closed forms) and `ntkngd.serial` / `ntkngd.cnn` (any stax stack) implement it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence

import numpy as np

from .. import _checks
from .._lazy import LazyModule, lazy_jit

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")


class _LazyStax:
    """neural_tangents.stax, imported on first use (keeps `ntkngd --help` and imports fast)."""

    def __getattr__(self, name: str) -> Any:
        from neural_tangents import stax as module
        return getattr(module, name)


stax = _LazyStax()


def traced(*trees) -> bool:
    """Whether any leaf of the pytrees is a JAX tracer, or a JAX transformation (jit, vmap, ...)
    is tracing this call (then even closed-over concrete arrays become tracers in every
    operation): no host check can run."""
    return isinstance(jnp.zeros(()), jax.core.Tracer) or \
        any(isinstance(a, jax.core.Tracer) for t in trees for a in jax.tree_util.tree_leaves(t))


def per_layer_ints(value: Any, count: int, name: str, what: str) -> tuple[int, ...]:
    """`count` positive integers from one integer (repeated) or a sequence / array of `count`."""
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0:      # int, np.int64, 64.0, jnp.int32
        return (_checks.positive_int(value, name),) * count
    values = tuple(np.asarray(value).tolist()) if hasattr(value, "shape") else tuple(value)
    if len(values) != count:
        raise ValueError(f"{name} must be one integer or {what}, got {len(values)}")
    return tuple(_checks.positive_int(v, name) for v in values)


@lazy_jit
def _all_finite(leaves) -> Any:
    return jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])


@lazy_jit(static_argnums=0)
def _apply(net, params, x):
    return net.apply_fn(params, x)


class Network(ABC):
    """The protocol (module docstring). Subclasses give the stax layers, which of them are
    trainable, their output widths, `features`, `analytic_layers` and `check_inputs`; they must be
    hashable (a static jit argument)."""

    @abstractmethod
    def stax_layers(self) -> list:
        """The stax (init_fn, apply_fn, kernel_fn) triples, in order."""

    # attributes of every implementation (dataclass fields or properties there):
    trainable: tuple[int, ...]      # indices of the trainable layers in stax_layers()
    layer_widths: tuple[int, ...]   # their output channels M_1..M_L (M_L = C)
    depth: int                      # L = len(trainable)
    widths: tuple[int, ...]         # hidden widths M_1..M_{L-1}
    out_dim: int                    # C = M_L

    @abstractmethod
    def features(self, params: Sequence, x) -> tuple:
        """(f (N, C), Ht_l (N, S_l, k_l [+1]), D_l (N C, S_l, M_l)) at params (jittable)."""

    @abstractmethod
    def analytic_layers(self, x1, x2) -> tuple:
        """Infinite-width (blocks, fwd, bwd or None, nngp) for inputs x1, x2 (x2 None: x1), the
        layer axis last: Theta_l, forward kernels Q_l, backward kernels B_l (None where the
        blocks do not factor as Q_l * B_l) (n1, n2, L) and the output NNGP (n1, n2)."""

    @abstractmethod
    def check_inputs(self, x: Any, name: str = "x", params: Any = None, like: Any = None,
                     dtype: Any = None) -> np.ndarray:
        """Inputs as a float array of the shape the network takes (host check, clear errors);
        `params`: their input dimension; `like`: the training inputs (same point shape);
        `dtype`: also check that the row norms keep the kernels finite in that dtype."""

    # ------------------------------------------------------------------ provided
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

    @property
    def gamma(self) -> Optional[float]:
        """Fraction of hidden units with a non-zero derivative (unit-wise theory); None where the
        network defines none."""
        return None

    def hidden_activation(self) -> Optional[Any]:
        """phi of the hidden layers where the wide limit is the MLP recursion (h = phi(u),
        u ~ N(0, Q_l); then `W_std` and `has_bias` are attributes too), else None."""
        return None

    def first_layer_inputs(self, x) -> Optional[Any]:
        """Ht_1 (N, k) of the first layer at infinite width where it is a fixed map of x (so
        that Q_1 = Ht_1 Ht_1^T), else None."""
        return None

    def _expects_bias(self, l: int) -> Optional[bool]:
        """Whether trainable layer l (0-based) has a bias; None: read from the params."""
        return None

    def _check_weight(self, l: int, W, fan_in: Optional[int]) -> Optional[int]:
        """Raise unless W of trainable layer l fits; returns the next layer's fan-in (None:
        not tracked)."""
        width = self.layer_widths[l]
        if len(W.shape) < 2 or W.shape[-1] != width:
            raise ValueError(f"W of layer {l + 1} has shape {tuple(W.shape)}, expected "
                             f"(..., {width}) ({width} output channels)")
        return None

    def check_params(self, params: Any) -> list:
        """params (from init_fn: one entry per stax layer, () for layers without parameters,
        (W, b or None) for trainable ones) checked against the network, as a list. Only shapes
        are read when traced (jittable); on concrete arrays also NaN / inf (one device pass)."""
        n = len(self.stax_layers())
        if not isinstance(params, (list, tuple)):
            raise ValueError(f"params must be the list returned by net.init_fn (one entry per stax "
                             f"layer), got {type(params).__name__}")
        if len(params) != n:
            raise ValueError(f"params has {len(params)} entries but the network has {n} stax "
                             "layers (one entry per layer, as net.init_fn returns them)")
        trainable, fan_in = set(self.trainable), None
        for i, p in enumerate(params):
            if i not in trainable:
                if p not in ((), []):
                    raise ValueError(f"params[{i}] (a layer without parameters) must be (), "
                                     f"got {p!r}")
                continue
            l = self.trainable.index(i)
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise ValueError(f"params[{i}] (trainable layer {l + 1}) must be a (W, b) pair, "
                                 f"got {type(p).__name__}")
            W, b = p
            fan_in = self._check_weight(l, W if hasattr(W, "shape") else np.asarray(W), fan_in)
            want = self._expects_bias(l)
            if want and b is None:
                raise ValueError(f"layer {l + 1}: the network has a bias but params carry none")
            if want is False and b is not None:
                raise ValueError(f"layer {l + 1}: the network has no bias (b_std=0) but params "
                                 "carry one")
            if b is not None and int(np.prod(np.shape(b))) != self.layer_widths[l]:
                raise ValueError(f"b of layer {l + 1} has shape {tuple(np.shape(b))}, expected "
                                 f"{self.layer_widths[l]} entries")
        self._check_finite(params)
        return list(params)

    def _check_finite(self, params) -> None:
        if traced(params):     # inside a transformation: no host transfer
            return
        named = [(f"{'Wb'[k]} of layer {l + 1}", a) for l, i in enumerate(self.trainable)
                 for k, a in enumerate(params[i]) if a is not None]
        ok = np.asarray(_all_finite([jnp.asarray(a) for _, a in named]))
        if not ok.all():
            bad = [name for (name, _), good in zip(named, ok) if not good]
            raise ValueError(f"params contain NaN or inf: {', '.join(bad)}")

    def layer_params(self, params: Sequence) -> list:
        """[(W_l, b_l or None)] of the trainable layers."""
        return [tuple(params[i]) for i in self.trainable]

    def split_update(self, params: Sequence, dws: Sequence) -> list:
        """Augmented per-layer updates d[W_l; b_l] (k_l [+1], M_l) -> a pytree shaped like
        params (() for layers without parameters)."""
        out: list = [() for _ in params]
        for i, dw in zip(self.trainable, dws):
            W, b = params[i]
            k = int(np.prod(W.shape[:-1]))
            dW = dw[:k].reshape(W.shape).astype(W.dtype)
            out[i] = (dW, None if b is None else dw[k:].reshape(b.shape).astype(b.dtype))
        return out

    def outputs(self, params: Sequence, x) -> Any:
        """f(x) (N, C) by the network's own apply_fn, jitted (no checks)."""
        return _apply(self, params, x)


def param_dtype(params: Sequence) -> Any:
    """The floating dtype of the parameters (at least float32)."""
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.result_type(leaves[0].dtype, jnp.float32)
