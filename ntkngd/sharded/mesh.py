"""Device meshes, row shardings and multi-process start-up for the sharded backend.

Every N x N (and N x N') array of the backend is split by rows over the one axis `AXIS` of a
`jax.sharding.Mesh`: device p holds rows [p b, (p + 1) b), b = Np / P, where Np is N rounded up to
a multiple of the device count P (`padded`; the extra "ghost" points are decoupled: identity rows
in training kernels, zero rows elsewhere). Vectors of size N x C are small and replicated.

Multi-process (one process per host): call `initialize()` before anything else touches JAX; it
reads JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, and
on CPU selects the gloo collectives. `make_mesh()` then spans the devices of every process.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

AXIS = "rows"
ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
    """`jax.distributed.initialize` from arguments or the environment (ENV_VARS); a no-op (False)
    when neither names a coordinator. On CPU the cross-process collectives are gloo's. Must run
    before the first JAX computation of the process."""
    addr = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr:
        return False
    n = num_processes if num_processes is not None else os.environ.get("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else os.environ.get("JAX_PROCESS_ID")
    if n is None or pid is None:
        raise ValueError("multi-process start needs JAX_NUM_PROCESSES and JAX_PROCESS_ID (or the "
                         "num_processes and process_id arguments) besides the coordinator address")
    import jax
    if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] in ("", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=addr, num_processes=int(n),
                               process_id=int(pid))
    return True


HOST_COUNT_FLAG = "--xla_force_host_platform_device_count"


def _backend_started() -> bool:
    """Whether JAX has started its backends (after which XLA_FLAGS no longer matter)."""
    import sys
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())


def _with_host_count(flags: str, count: int) -> str:
    """XLA_FLAGS text with the simulated CPU device count set to at least `count`."""
    prefix = HOST_COUNT_FLAG + "="
    parts, counts = [], [count]
    for flag in flags.split():
        if not flag.startswith(prefix):
            parts.append(flag)
        elif flag[len(prefix):].isdigit():
            counts.append(int(flag[len(prefix):]))
    return " ".join(parts + [f"{prefix}{max(counts)}"])


def request_devices(count: int, option: str = "devices") -> int:
    """Make `count` devices available to `make_mesh(count)`; returns the number available.

    Before JAX starts its backend, XLA_FLAGS gets --xla_force_host_platform_device_count >= count
    (simulated CPU devices; an accelerator platform ignores it and offers its own devices). Then
    ValueError naming `option` when fewer than `count` devices exist: an accelerator host with
    fewer, or a JAX that had already started with fewer (the flag must be set before that)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"{option} must be a positive integer (>= 1), got {count!r}")
    started = _backend_started()
    if not started:
        os.environ["XLA_FLAGS"] = _with_host_count(os.environ.get("XLA_FLAGS", ""), int(count))
    import jax
    devs = jax.devices()
    if len(devs) < count:
        why = ("JAX had already started its backend before the device count could be set (set "
               f"XLA_FLAGS={HOST_COUNT_FLAG}={count} before importing JAX)" if started and
               devs[0].platform == "cpu" else f"this {devs[0].platform} host has no more")
        raise ValueError(f"{option} {count}: only {len(devs)} {devs[0].platform} device(s) "
                         f"available; {why}")
    return len(devs)


def make_mesh(devices: Union[None, int, Sequence[Any]] = None):
    """A one-axis mesh (axis `AXIS`) over `devices`: None = every device of every process, an int
    n = the first n of `jax.devices()`, or a sequence of devices."""
    import jax
    from jax.sharding import Mesh
    all_devs = jax.devices()
    if devices is None:
        devs = all_devs
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(all_devs):
            raise ValueError(f"devices must be between 1 and the {len(all_devs)} available "
                             f"devices, got {devices}")
        devs = all_devs[:int(devices)]
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("devices must name at least one device")
    return Mesh(np.array(devs), (AXIS,))


def check_mesh(mesh) -> int:
    """The device count P of a one-axis mesh; TypeError/ValueError for anything else."""
    from jax.sharding import Mesh
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (ntkngd.sharded.make_mesh), got "
                        f"{type(mesh).__name__}")
    if mesh.axis_names != (AXIS,):
        raise ValueError(f"mesh must have the single axis {AXIS!r} (ntkngd.sharded.make_mesh), "
                         f"got axes {mesh.axis_names}")
    return int(mesh.devices.size)


def padded(n: int, devices: int) -> int:
    """n rounded up to a multiple of the device count."""
    return -(-int(n) // int(devices)) * int(devices)


def rows(mesh):
    """NamedSharding of a matrix split by rows over the mesh."""
    from jax.sharding import NamedSharding, PartitionSpec
    return NamedSharding(mesh, PartitionSpec(AXIS, None))


def replicated(mesh):
    """NamedSharding of an array held whole by every device."""
    from jax.sharding import NamedSharding, PartitionSpec
    return NamedSharding(mesh, PartitionSpec())


def put_replicated(x: Any, mesh, dtype=None):
    """A host array as a replicated global array (every process passes the same values)."""
    import jax
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype)
    sh = replicated(mesh)
    return jax.make_array_from_callback(a.shape, sh, lambda idx: a[idx])


def to_host(x) -> np.ndarray:
    """numpy copy of a replicated (or fully addressable) global array, in every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    if not x.sharding.is_fully_replicated:
        raise ValueError("to_host needs a replicated array: gather a sharded one first")
    return np.asarray(x.addressable_shards[0].data)


def local_row_blocks(mesh) -> list[tuple[Any, int]]:
    """(device, index of its row block) for every device of this process, in mesh order."""
    import jax
    mine = set(jax.local_devices())
    return [(d, p) for p, d in enumerate(mesh.devices.flat) if d in mine]


def gather(x) -> np.ndarray:
    """The whole global array on the host of every process (small arrays, checks and tests
    only: this is the gather the backend itself never does)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
