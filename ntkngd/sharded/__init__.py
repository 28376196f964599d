"""Sharded, matrix-free function-space dynamics on a JAX device mesh (docs/sharded.md).

    mesh = ntkngd.sharded.make_mesh()                       # every device of every process
    K = ntkngd.analytic_kernels(net, x, x_test, mesh=mesh)  # row-sharded per-layer kernels
    op = ntkngd.operator("block_diagonal", K)               # applied by distributed solves
    traj = ntkngd.predict(op, f0, y, f0_test, times=[0, 1, np.inf])

Multi-process: `ntkngd.sharded.initialize()` first (environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), then the same code in every process.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "initialize": (".mesh", "initialize"),
    "make_mesh": (".mesh", "make_mesh"),
    "to_host": (".mesh", "to_host"),
    "ShardedKernels": (".kernels", "ShardedKernels"),
    "sharded_kernels": (".kernels", "sharded_kernels"),
    "ShardedOperator": (".operators", "ShardedOperator"),
    "operator": (".operators", "operator"),
    "predict": (".trajectory", "predict"),
    "memory": (".memory", None),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
