"""Per-layer kernels: the container every method consumes, and its infinite-width constructor.

For a dense layer l the Jacobian rows factor as (backpropagated derivative) x (layer input), so
    Theta_l(x, x') = Q_l(x, x') * B_l(x, x')          (elementwise),
with the forward kernel Q_l = <Ht_l(x), Ht_l(x')> = W_std^2 <h_{l-1}, h'_{l-1}> / M_{l-1} + b_std^2
(the layer input, scaled as in the forward pass and augmented with the bias column: at infinite
width the NNGP kernel of u_l) and the backward kernel B_l = <df/du_l(x), df/du_l(x')>
(B_L = 1, B_l = W_std^2 * Kdot_l * B_{l+1} with Kdot_l = E[phi'(u_l) phi'(u'_l)]).

At infinite width every kernel is K (x) I_C over the C outputs; the container then stores the N x N
factor and sets `kron_outputs=True`. Finite-width (empirical) kernels keep the output index:
matrices are (N C) x (N C), sample-major (row n * C + c), and `kron_outputs=False`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np

from . import _checks
from ._lazy import LazyModule, lazy_jit
from .network import Network


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
nt = LazyModule("neural_tangents")


@dataclass(frozen=True)
class Kernels:
    """Per-layer kernels on training points (and optionally test points x training points).

    blocks_*: per-layer NTK blocks Theta_l, shape (L, m, m) / (L, m', m) with m = N (infinite width)
              or N C (finite width).
    fwd_*:    forward (layer-input) kernels Q_l, shape (L, N, N) / (L, N', N).
    bwd_*:    backward kernels B_l, shape (L, m, m) / (L, m', m).
    nngp_*:   output NNGP kernel (covariance of f at initialization), (m, m) / (m', m); None for
              finite-width kernels.
    layer_inputs_*, backprops_*: finite width only: per layer Ht_l (N, M_{l-1} [+1]) and
              D_l (N C, M_l), from which K-FAC and unit-wise operators are built.
    first_inputs_*: infinite-width MLPs: the first layer's input Ht_1 = [W_std x / sqrt(d), b_std]
              (N, d [+1]), so that fwd_*[0] = Ht_1 Ht_1(train)^T; K-FAC factors its first-layer
              Gram through it when N > d + 1 (a (d+1) x (d+1) problem instead of N x N).
    """

    blocks_train: jnp.ndarray
    fwd_train: jnp.ndarray
    bwd_train: jnp.ndarray
    out_dim: int
    kron_outputs: bool
    network: Network
    blocks_test: Optional[jnp.ndarray] = None
    fwd_test: Optional[jnp.ndarray] = None
    bwd_test: Optional[jnp.ndarray] = None
    nngp_train: Optional[jnp.ndarray] = None
    nngp_test: Optional[jnp.ndarray] = None
    input_dim: int = 0
    layer_inputs_train: Optional[tuple] = None
    layer_inputs_test: Optional[tuple] = None
    backprops_train: Optional[tuple] = None
    backprops_test: Optional[tuple] = None
    first_inputs_train: Optional[jnp.ndarray] = None
    first_inputs_test: Optional[jnp.ndarray] = None

    replace = dataclasses.replace

    @property
    def depth(self) -> int:
        """Number of trainable layers L."""
        return int(self.blocks_train.shape[0])

    @property
    def n_train(self) -> int:
        """Training points N."""
        return int(self.fwd_train.shape[1])

    @property
    def n_test(self) -> int:
        """Test points N' (0 without test points)."""
        return 0 if self.fwd_test is None else int(self.fwd_test.shape[1])

    @property
    def has_test(self) -> bool:
        """Whether test-train kernels were computed."""
        return self.blocks_test is not None

    @property
    def ntk_train(self) -> jnp.ndarray:
        """Total NTK on the training points, sum_l Theta_l."""
        return self.blocks_train.sum(0)

    @property
    def ntk_test(self) -> Optional[jnp.ndarray]:
        """Total test-train NTK sum_l Theta_l(X', X), or None."""
        return None if self.blocks_test is None else self.blocks_test.sum(0)

    @property
    def is_infinite_width(self) -> bool:
        """True for analytic kernels (N x N factors of K (x) I_C)."""
        return self.kron_outputs


class _LayerKernels(NamedTuple):
    fwd: jnp.ndarray
    bwd: jnp.ndarray
    blocks: jnp.ndarray
    nngp: jnp.ndarray


def _tap_layers(net: Network, x1: jnp.ndarray, x2: Optional[jnp.ndarray],
                layer_axis: int = 0) -> _LayerKernels:
    """Run neural-tangents' kernel recursion layer by layer and read off Q_l, Kdot_l.

    Returns fwd, bwd, blocks with the layer index on `layer_axis` ((L, n1, n2) by default;
    layer_axis=-1 gives (n1, n2, L), the leading sample axes `nt.batch` expects) and the output
    nngp (n1, n2). Exact diagonals need x2 = None (x2 = x1).
    """
    act = net.activation_layer()
    fwd, kdot = [], []
    k: Any = x1, x2
    one = jnp.ones((), x1.dtype)
    for l in range(1, net.depth + 1):
        dense = net.dense_layer(l)
        k = dense[2](*k) if l == 1 else dense[2](k)
        fwd.append(k.nngp)
        if l < net.depth:
            # With ntk := 1 going in, phi's kernel_fn returns ntk = Kdot_l (the NTK itself is
            # never needed: Theta_l = Q_l * B_l); ntk := None going into the next dense layer
            # skips its NTK update.
            k = act[2](k.replace(ntk=one))
            kdot.append(k.ntk)
            k = k.replace(ntk=None)
    fwd_s, bwd_s, blocks = _stack_layers(tuple(fwd), tuple(kdot), float(net.W_std) ** 2,
                                         layer_axis)
    return _LayerKernels(fwd_s, bwd_s, blocks, k.nngp)


@lazy_jit(static_argnums=(2, 3))
def _stack_layers(fwd: tuple, kdot: tuple, w_var: float, layer_axis: int):
    """Stacked Q_l, B_l (B_L = 1, B_l = W_std^2 Kdot_l B_{l+1}) and Theta_l = Q_l B_l in one
    jitted pass (products only: the same bits as eager jax.numpy)."""
    bwd = [jnp.ones_like(fwd[-1])]
    for l in range(len(fwd) - 1, 0, -1):
        bwd.insert(0, w_var * kdot[l - 1] * bwd[0])
    fwd_s, bwd_s = jnp.stack(fwd, layer_axis), jnp.stack(bwd, layer_axis)
    return fwd_s, bwd_s, fwd_s * bwd_s


def _pad_rows(x: jnp.ndarray, multiple: int) -> jnp.ndarray:
    pad = (-x.shape[0]) % multiple
    return jnp.concatenate([x, jnp.repeat(x[:1], pad, 0)]) if pad else x


def _layer_kernels(net: Network, x1, x2, batch_size: int) -> _LayerKernels:
    """Per-layer kernels with the layer axis first. x2 = None means x2 = x1; neural-tangents then
    uses exact diagonal formulas (passing x1 twice loses ~sqrt(eps) on the diagonal of arc-cosine
    kernels)."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size and max(n1, n2) > batch_size:
        fn = nt.batch(lambda a, b: _tap_layers(net, a, b, layer_axis=-1), batch_size=batch_size,
                      store_on_device=False)
        tile = batch_size * jax.local_device_count()   # nt.batch spreads tiles over devices
        out = [jnp.asarray(v)[:n1, :n2] for v in
               fn(_pad_rows(x1, tile), None if x2 is None else _pad_rows(x2, tile))]
        return _LayerKernels(*(_move_layer_axis(v) for v in out[:3]), out[3])
    # Not jitted on purpose: XLA's fused arithmetic turns the exact zero of prod - nngp^2 on the
    # diagonal of arc-cosine kernels into round-off, whose square root costs ~1e-8 relative.
    return _tap_layers(net, x1, x2)


def _move_layer_axis(a: jnp.ndarray) -> jnp.ndarray:
    return jnp.moveaxis(a, -1, 0)


def first_layer_inputs(net: Network, x: jnp.ndarray) -> jnp.ndarray:
    """Ht_1 = [W_std x / sqrt(d), b_std 1] (the bias column only when the network has a bias):
    the first dense layer's input as scaled in NTK parameterization, Q_1(x, x') = Ht_1 Ht_1'^T."""
    ht = x * (net.W_std / np.sqrt(x.shape[1]))
    if net.has_bias:
        ht = jnp.concatenate([ht, jnp.full((x.shape[0], 1), net.b_std, x.dtype)], axis=1)
    return ht


def analytic_kernels(net: Network, x_train: Any, x_test: Any = None,
                     batch_size: int = 0, mesh: Any = None) -> Kernels:
    """Infinite-width per-layer kernels of `net` through neural-tangents.

    Returns a `Kernels` with N x N factors (`kron_outputs=True`: each kernel is K (x) I_C).
    Uses the dtype of JAX's default float (float64 with `jax_enable_x64`). `batch_size > 0` tiles
    the computation with `neural_tangents.batch` over all local devices (0: no tiling). Inputs
    whose kernels overflow (row norms ~1e77 and above in float64) raise a ValueError.
    mesh: a `jax.sharding.Mesh` (ntkngd.sharded.make_mesh) returns `ntkngd.sharded`'s row-sharded
    kernels instead (batch_size = rows per tile); None keeps the dense path.
    """
    if mesh is not None:   # hook: ntkngd.sharded (built from this module's layer recursion)
        from .sharded.kernels import build
        return build(net, x_train, x_test, mesh, batch_size, tap=_tap_layers,
                     inputs=first_layer_inputs)
    if getattr(net, "is_serial", False):   # hook: stax serial networks
        from .serial_kernels import serial_analytic_kernels
        return serial_analytic_kernels(net, x_train, x_test, batch_size)
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntkngd Network (from ntkngd.mlp), got {type(net).__name__}")
    batch_size = _checks.non_negative_int(batch_size, "batch_size")
    dtype = jnp.zeros(()).dtype
    xtr = jnp.asarray(_checks.inputs(x_train, "x_train"), dtype)
    d = xtr.shape[1]
    train = _layer_kernels(net, xtr, None, batch_size)
    fields: dict[str, Any] = dict(
        blocks_train=train.blocks, fwd_train=train.fwd, bwd_train=train.bwd, nngp_train=train.nngp,
        out_dim=net.out_dim, kron_outputs=True, network=net, input_dim=d,
        first_inputs_train=first_layer_inputs(net, xtr))
    if x_test is not None:
        xte = jnp.asarray(_checks.inputs(x_test, "x_test", dim=d), dtype)
        test = _layer_kernels(net, xte, xtr, batch_size)
        fields.update(blocks_test=test.blocks, fwd_test=test.fwd, bwd_test=test.bwd,
                      nngp_test=test.nngp, first_inputs_test=first_layer_inputs(net, xte))
    # blocks = fwd * bwd is inf or NaN wherever fwd or bwd is, so blocks and nngp cover every kernel
    _checks.finite_kernels({k: v for k, v in fields.items() if k.startswith(("blocks", "nngp"))},
                           np.asarray(xtr))
    return Kernels(**fields)
