"""Per-layer infinite-width kernels computed tile by tile and placed row-sharded over a device mesh.

Each device's row block (b = Np / P training points) is computed in row tiles of `tile` points
(default `tile_rows`)
against all training (and test) points by the library's own layer recursion
(`MLP.analytic_layers`, neural-tangents' kernel_fn), and only that block is placed on the
device: no device (and no process) ever holds a full N x N matrix. Stored per layer l:

    fwd_train[l]   Q_l(X, X)       (Np, Np)
    bwd_train[l]   B_l(X, X)       (Np, Np), l < L only (B_L = 1 1^T is not stored)
    fwd_test_t[l]  Q_l(X', X)^T    (Np, N')  (transposed: rows are training points too)
    bwd_test_t[l]  B_l(X', X)^T    (Np, N'), l < L only

in the storage dtype (float32 halves the memory; the solves and products then accumulate in the
compute dtype, float64 under jax_enable_x64). Theta_l = Q_l o B_l is formed on demand (`block`)
in the compute dtype: the same elementwise product as the dense path, and exact for float32
factors (24 + 24 significant bits fit float64's 53), so float32 storage computes exactly what the
float64 path computes on kernels rounded once to float32. The diagonal tile of each row tile is recomputed
with x2 = None (neural-tangents' exact diagonal: passing x1 twice loses ~sqrt(eps) there). Ghost
rows (Np > N) hold the identity in training kernels and zeros in test kernels.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .. import _checks
from . import mesh as meshes

# Rows x columns of one kernel tile: neural-tangents keeps ~30 float64 arrays of a tile's shape
# alive, so 1e6 entries cost ~0.25 GB whatever N is; rows are clipped to [64, 512].
TILE_ENTRIES = 1_000_000


def tile_rows(n: int, n_test: int) -> int:
    """Default rows per tile: TILE_ENTRIES / (N + N'), clipped to [64, 512]."""
    return int(np.clip(TILE_ENTRIES // max(n + n_test, 1), 64, 512))


@dataclass(frozen=True, eq=False)
class ShardedKernels:
    """Row-sharded per-layer kernels (module docstring); `cache` holds factorizations shared by
    the operators built on them (`clear_cache()` frees them)."""

    fwd_train: tuple
    bwd_train: tuple
    fwd_test_t: Optional[tuple]
    bwd_test_t: Optional[tuple]
    first_inputs_train: np.ndarray
    first_inputs_test: Optional[np.ndarray]
    n_train: int
    n_test: int
    out_dim: int
    network: Any
    mesh: Any
    input_dim: int
    storage_dtype: np.dtype
    compute_dtype: np.dtype
    cache: dict = field(default_factory=dict, repr=False)

    is_sharded = True
    kron_outputs = True
    is_infinite_width = True
    replace = dataclasses.replace

    @property
    def depth(self) -> int:
        return len(self.fwd_train)

    @property
    def has_test(self) -> bool:
        return self.fwd_test_t is not None

    @property
    def devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def padded(self) -> int:
        """Np: N rounded up to a multiple of the device count."""
        return int(self.fwd_train[0].shape[0])

    def block(self, l: int):
        """Theta_l(X, X) = Q_l o B_l in the compute dtype, row-sharded (Q_L for the output layer,
        B_L = 1)."""
        return _product(self.fwd_train[l], self.bwd_train[l], self.compute_dtype)

    def test_block_t(self, l: int):
        """Theta_l(X', X)^T in the compute dtype, row-sharded (Np, N')."""
        return _product(self.fwd_test_t[l], self.bwd_test_t[l], self.compute_dtype)

    def cached(self, key: str, compute):
        """compute() once per kernels object and key."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def clear_cache(self) -> None:
        """Drop every cached factorization and formed total."""
        self.cache.clear()

    def nbytes_per_device(self) -> int:
        """Bytes of stored kernels on the busiest device."""
        arrays = [a for group in (self.fwd_train, self.bwd_train, self.fwd_test_t or (),
                                  self.bwd_test_t or ()) for a in group if a is not None]
        return sum(a.addressable_shards[0].data.nbytes for a in arrays)


def _product(a, b, dtype):
    from .linalg import hadamard
    return hadamard(a, b, dtype)


def _row_tiles(lo: int, hi: int, tile: int):
    for s in range(lo, hi, tile):
        yield s, min(s + tile, hi)


@functools.lru_cache(maxsize=None)
def _writer():
    """buf with rows [i, i + len(rows)) replaced, in place (the buffer is donated)."""
    import jax
    return jax.jit(lambda buf, rows, i: jax.lax.dynamic_update_slice(buf, rows, (i, i * 0)),
                   donate_argnums=0)


class _Block:
    """One device's row block of every stored kernel, filled tile by tile in place on the
    device (no host copy of the block: only one tile at a time lives on the host)."""

    def __init__(self, device, b: int, widths: dict, dtype):
        import jax
        self.device, self.dtype = device, dtype
        self.bufs = {k: [jax.device_put(np.zeros((b, w), dtype), device) for _ in range(c)]
                     for k, (c, w) in widths.items()}

    def write(self, key: str, start: int, tiles: np.ndarray) -> None:
        import jax
        for l, rows in enumerate(tiles):
            self.bufs[key][l] = _writer()(self.bufs[key][l], jax.device_put(
                np.ascontiguousarray(rows, self.dtype), self.device), np.int32(start))


def _tap(net, x1, x2) -> tuple:
    """(fwd, bwd, blocks) with the layer axis first, and the output nngp: `net.analytic_layers`."""
    import jax.numpy as jnp
    blocks, fwd, bwd, nngp = net.analytic_layers(x1, x2)
    return tuple(jnp.moveaxis(v, -1, 0) for v in (fwd, bwd, blocks)) + (nngp,)


def _fill_block(block: _Block, net, x, xt, rows: tuple[int, int], n_pad: int, tile: int) -> None:
    """Compute one device's row block [lo, hi) tile by tile (rows beyond N are ghosts: identity
    rows in the training kernels, zeros in the test kernels)."""
    import jax.numpy as jnp
    lo, hi = rows
    n = x.shape[0]
    for s, e in _row_tiles(lo, min(hi, n), tile):
        xs = x[s:e]
        fwd, bwd, blocks, nngp = _tap(net, xs, jnp.asarray(x))
        dfwd, dbwd, _, _ = _tap(net, xs, None)           # exact diagonal tile
        _checks.finite_kernels({"blocks_train": blocks, "nngp_train": nngp}, np.asarray(xs))
        for key, full, diag in (("fwd", fwd, dfwd), ("bwd", bwd[:-1], dbwd[:-1])):
            t = np.zeros((full.shape[0], e - s, n_pad), block.dtype)
            t[:, :, :n] = np.asarray(full)
            t[:, :, s:e] = np.asarray(diag)
            block.write(key, s - lo, t)
        if xt is not None:
            tfwd, tbwd, tblocks, tnngp = _tap(net, xs, xt)
            _checks.finite_kernels({"blocks_test": tblocks, "nngp_test": tnngp},
                                   np.asarray(xs))
            block.write("tf", s - lo, np.asarray(tfwd))
            block.write("tb", s - lo, np.asarray(tbwd[:-1]))
    if hi > max(lo, n):                           # ghost points: decoupled identity rows
        ghost = np.zeros((hi - max(lo, n), n_pad), block.dtype)
        ghost[np.arange(len(ghost)), np.arange(max(lo, n), hi)] = 1.0
        for key in ("fwd", "bwd"):
            block.write(key, max(lo, n) - lo, np.repeat(ghost[None], len(block.bufs[key]), 0))


def sharded_kernels(net, x_train: Any, x_test: Any = None, mesh=None, tile: int = 0,
                    storage=None) -> ShardedKernels:
    """Infinite-width per-layer kernels of an MLP `net`, row-sharded over `mesh` (module
    docstring). tile: rows per kernel tile (0: `tile_rows`); storage: dtype of the stored kernels (None:
    JAX's default float; float32 halves the memory, the arithmetic stays in JAX's default float).
    Every process of a multi-process run passes the same inputs and computes its own rows."""
    from ..networks.fully_connected import MLP
    import jax.numpy as jnp
    if not isinstance(net, MLP):
        raise TypeError(f"the sharded backend needs an ntkngd MLP (ntkngd.mlp), got "
                        f"{type(net).__name__}")
    P = meshes.check_mesh(mesh)
    cdt = np.dtype(jnp.zeros(()).dtype)
    sdt = cdt if storage is None else np.dtype(storage)
    if sdt.kind != "f" or sdt.itemsize > cdt.itemsize:
        raise ValueError(f"storage must be a float dtype no wider than the compute dtype {cdt}, "
                         f"got {sdt}")
    x = jnp.asarray(_checks.inputs(x_train, "x_train"), cdt)
    n, d = x.shape
    xt = None if x_test is None else jnp.asarray(_checks.inputs(x_test, "x_test", dim=d), cdt)
    L, n_pad = net.depth, meshes.padded(n, P)
    b = n_pad // P
    n_test = 0 if xt is None else int(xt.shape[0])
    tile = tile_rows(n, n_test) if not tile else _checks.positive_int(tile, "tile")
    widths = {"fwd": (L, n_pad), "bwd": (L - 1, n_pad)}
    if xt is not None:
        widths.update(tf=(L, n_test), tb=(L - 1, n_test))
    blocks = []
    for dev, p in meshes.local_row_blocks(mesh):
        blk = _Block(dev, b, widths, sdt)
        _fill_block(blk, net, x, xt, (p * b, (p + 1) * b), n_pad, tile)
        blocks.append(blk)

    def place(key: str) -> tuple:
        import jax
        count, cols = widths[key]
        return tuple(jax.make_array_from_single_device_arrays(
            (n_pad, cols), meshes.rows(mesh), [blk.bufs[key][l] for blk in blocks])
            for l in range(count))

    fwd, bwd = place("fwd"), place("bwd") + (None,)
    tf = tb = None
    if xt is not None:
        tf, tb = place("tf"), place("tb") + (None,)
    return ShardedKernels(fwd, bwd, tf, tb, np.asarray(net.first_layer_inputs(x)),
                          None if xt is None else np.asarray(net.first_layer_inputs(xt)),
                          n, 0 if xt is None else int(xt.shape[0]), net.out_dim, net, mesh, d,
                          sdt, cdt)
