"""`sharded_kernels`: the public entry point to row-sharded kernels with a storage dtype (kept apart
from `kernels`, which ntkngd.kernels' mesh hook imports, because it imports ntkngd.kernels)."""
from __future__ import annotations

from typing import Any


def sharded_kernels(net, x_train: Any, x_test: Any = None, mesh=None, tile: int = 0,
                    storage=None):
    """Per-layer kernels of an MLP `net` row-sharded over `mesh` (`kernels.build`); tile: rows per
    kernel tile (0: `kernels.tile_rows`); storage: stored dtype (None: JAX's default float)."""
    from ..kernels import _tap_layers, first_layer_inputs
    from .kernels import build
    return build(net, x_train, x_test, mesh, tile, storage, tap=_tap_layers,
                 inputs=first_layer_inputs)
