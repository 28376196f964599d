"""Per-layer kernels: the container every method consumes, and its infinite-width constructor.

One position: Theta_l = Q_l * B_l (elementwise), Q_l = <Ht_l(x), Ht_l(x')>, B_l = <D_l(x), D_l(x')>.
Infinite width stores the N x N factor of K (x) I_C (`kron_outputs=True`); finite width the
(N C) x (N C) sample-major matrices (row n C + c).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import _checks
from .._lazy import LazyModule
from .base import Network

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
nt = LazyModule("neural_tangents")


@dataclass(frozen=True)
class Kernels:
    """Per-layer kernels on training points (and test x training points), m = N (infinite width)
    or N C (finite width): blocks_* Theta_l (L, m, m) / (L, m', m); fwd_* Q_l (L, N, N) (with
    positions: the patch Gram averaged over them); bwd_* B_l, None where the blocks do not factor
    as Q_l * B_l; nngp_* the output NNGP (infinite width only); layer_inputs_*, backprops_* (finite
    width only) Ht_l (N, S_l, k_l [+1]) and D_l (N C, S_l, M_l); first_inputs_* (MLPs at infinite
    width) Ht_1 (N, d [+1]) with fwd_*[0] = Ht_1 Ht_1^T, which K-FAC factors when N > d + 1."""

    blocks_train: Any
    fwd_train: Any
    bwd_train: Any
    out_dim: int
    kron_outputs: bool
    network: Network
    blocks_test: Optional[Any] = None
    fwd_test: Optional[Any] = None
    bwd_test: Optional[Any] = None
    nngp_train: Optional[Any] = None
    nngp_test: Optional[Any] = None
    input_dim: int = 0
    layer_inputs_train: Optional[tuple] = None
    layer_inputs_test: Optional[tuple] = None
    backprops_train: Optional[tuple] = None
    backprops_test: Optional[tuple] = None
    first_inputs_train: Optional[Any] = None
    first_inputs_test: Optional[Any] = None

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
    def ntk_train(self):
        """Total NTK on the training points, sum_l Theta_l."""
        return self.blocks_train.sum(0)

    @property
    def ntk_test(self):
        """Total test-train NTK sum_l Theta_l(X', X), or None."""
        return None if self.blocks_test is None else self.blocks_test.sum(0)

    @property
    def is_infinite_width(self) -> bool:
        """True for analytic kernels (N x N factors of K (x) I_C)."""
        return self.kron_outputs

    @property
    def has_features(self) -> bool:
        """Whether the finite-width layer inputs and backprops are carried."""
        return self.layer_inputs_train is not None and self.backprops_train is not None

    @property
    def positions(self) -> tuple[int, ...]:
        """S_l of every layer (1 for dense layers; all 1 without features)."""
        if not self.has_features:
            return (1,) * self.depth
        return tuple(int(h.shape[1]) for h in self.layer_inputs_train)


def require_features(K: Kernels, what: str) -> None:
    """Raise a clear error when K lacks the finite-width layer inputs and backprops."""
    if not K.has_features:
        raise ValueError(f"{what} needs finite-width kernels with layer inputs and backprops "
                         "(ntkngd.empirical_kernels), not infinite-width analytic kernels")


def pad_rows(x, multiple: int):
    """x with its first row repeated until the row count is a multiple of `multiple`."""
    pad = (-x.shape[0]) % multiple
    return jnp.concatenate([x, jnp.repeat(x[:1], pad, 0)]) if pad else x


def _layers(net: Network, x1, x2, batch_size: int) -> tuple:
    """(blocks, fwd, bwd or None, nngp) with the layer axis first. x2 = None means x2 = x1;
    neural-tangents then uses exact diagonal formulas (passing x1 twice loses ~sqrt(eps) on the
    diagonal of arc-cosine kernels). batch_size: tiles over all local devices (nt.batch)."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size and max(n1, n2) > batch_size:
        def arrays(a, b):           # nt.batch takes arrays only: bwd last, where there is one
            blocks, fwd, bwd, nngp = net.analytic_layers(a, b)
            return (blocks, fwd, nngp) + (() if bwd is None else (bwd,))
        fn = nt.batch(arrays, batch_size=batch_size, store_on_device=False)
        tile = batch_size * jax.local_device_count()
        got = [jnp.asarray(v)[:n1, :n2] for v in
               fn(pad_rows(x1, tile), None if x2 is None else pad_rows(x2, tile))]
        out = (got[0], got[1], got[3] if len(got) == 4 else None, got[2])
    else:
        out = net.analytic_layers(x1, x2)
    return tuple(None if v is None else jnp.moveaxis(v, -1, 0) for v in out[:3]) + (out[3],)


def analytic_kernels(net: Network, x_train: Any, x_test: Any = None,
                     batch_size: int = 0, mesh: Any = None) -> Kernels:
    """Infinite-width per-layer kernels of `net` through neural-tangents: N x N factors
    (`kron_outputs=True`), in JAX's default float. batch_size > 0 tiles with neural_tangents.batch
    over the local devices; mesh (`ntkngd.sharded.make_mesh`) gives the row-sharded kernels of
    `ntkngd.sharded` instead (batch_size: rows per tile). Overflowing inputs raise a ValueError."""
    if mesh is not None:   # hook: sharded backend (ntkngd.sharded)
        from ..sharded.kernels import sharded_kernels
        return sharded_kernels(net, x_train, x_test, mesh, tile=batch_size)
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntkngd Network (ntkngd.mlp, ntkngd.serial, ntkngd.cnn), "
                        f"got {type(net).__name__}")
    batch_size = _checks.non_negative_int(batch_size, "batch_size")
    xtr = net.check_inputs(x_train, "x_train")
    xte = None if x_test is None else net.check_inputs(x_test, "x_test", like=xtr)
    return analytic_of_checked(net, xtr, xte, batch_size)


def analytic_of_checked(net: Network, x_train: Any, x_test: Any = None,
                        batch_size: int = 0) -> Kernels:
    """`analytic_kernels` (no mesh) of inputs already checked by `net.check_inputs`."""
    dtype = jnp.zeros(()).dtype
    xtr = jnp.asarray(x_train, dtype)
    blocks, fwd, bwd, nngp = _layers(net, xtr, None, batch_size)
    fields: dict[str, Any] = dict(
        blocks_train=blocks, fwd_train=fwd, bwd_train=bwd, nngp_train=nngp, out_dim=net.out_dim,
        kron_outputs=True, network=net, input_dim=int(xtr[0].size),
        first_inputs_train=net.first_layer_inputs(xtr))
    if x_test is not None:
        xte = jnp.asarray(x_test, dtype)
        blocks, fwd, bwd, nngp = _layers(net, xte, xtr, batch_size)
        fields.update(blocks_test=blocks, fwd_test=fwd, bwd_test=bwd, nngp_test=nngp,
                      first_inputs_test=net.first_layer_inputs(xte))
    # blocks = fwd * bwd is inf or NaN wherever fwd or bwd is, so blocks and nngp cover every kernel
    _checks.finite_kernels({k: v for k, v in fields.items() if k.startswith(("blocks", "nngp"))},
                           np.asarray(xtr).reshape(xtr.shape[0], -1))
    return Kernels(**fields)
