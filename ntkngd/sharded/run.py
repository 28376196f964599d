"""One command per process: MNIST kernels, operators and fixed points on a device mesh.

    python -m ntkngd.sharded.run --n 2000 --n-test 1000 --devices 4 --out result.npz

Runs every requested method (default gd, exact, block_diagonal, block_tridiagonal, kfac) on the
first --n + --n-test images of a seeded draw from MNIST (the bundled test split, or --data-dir;
10 classes, one-hot targets, the library's preprocessing), an L-layer ReLU MLP, initial outputs
f_0 = --f0-scale x N(0, 1) (seeded; 0 gives the kernel-regression mean), and saves the train and
test outputs at --times (inf: the fixed point) with test loss and accuracy, time and peak memory
per stage (process 0 writes --out, atomically). Multi-process: set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID in each process (docs/sharded.md); simulated devices: set
XLA_FLAGS=--xla_force_host_platform_device_count=K before the start.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings

import numpy as np

METHODS = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac")


def family(method: str, depth: int) -> str:
    """Which cached factors a method uses: the total NTK's (gd, exact), the blocks' (other
    patterns), none (kfac: one factor at a time)."""
    from ..methods import get_method
    m = get_method(method)
    if m.kind == "gd" or (m.kind == "pattern" and bool((m.pattern(depth).matrix == 1).all())):
        return "total"
    return "blocks" if m.kind == "pattern" else m.name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ntkngd.sharded.run", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="training points N")
    p.add_argument("--n-test", type=int, default=1000, help="test points N'")
    p.add_argument("--devices", type=int, default=0, help="mesh devices (0: all, every process)")
    p.add_argument("--depth", type=int, default=3, help="layers L")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--times", nargs="+", default=["inf"], help="continuous times (inf: fixed point)")
    p.add_argument("--storage", default=None, help="kernel storage dtype (float32 halves memory)")
    p.add_argument("--f0-scale", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST files (default: the bundled test split)")
    p.add_argument("--test-from-train", action="store_true",
                   help="test points = the last N' training points (memory/time check only)")
    p.add_argument("--tile", type=int, default=0, help="rows per kernel tile (0: default)")
    p.add_argument("--out", default=None, help=".npz of the outputs (written by process 0)")
    p.add_argument("--save-kernels", action="store_true",
                   help="also save the gathered kernels (small N: checks against the dense path)")
    p.add_argument("--quiet", action="store_true")
    return p


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def problem(n: int, n_test: int, depth: int = 3, f0_scale: float = 0.0, seed: int = 0,
            data_dir=None, test_from_train: bool = False):
    """(data set, network, f_0 train, f_0 test) of one configuration (module docstring).
    test_from_train: the test points are the last n_test training points (a memory and time
    check where the data hold no N + N' disjoint images; the test accuracy then measures
    nothing)."""
    import dataclasses
    import ntkngd as ng
    if test_from_train:
        d = ng.data.load_mnist(data_dir, n_train=n - n_test, n_test=n_test, classes=None,
                               seed=seed)
        ds = dataclasses.replace(
            d, x_train=np.concatenate([d.x_train, d.x_test]),
            y_train=np.concatenate([d.y_train, d.y_test]),
            labels_train=np.concatenate([d.labels_train, d.labels_test]),
            source=d.source + "; training set = both draws, test set = the second (overlap)")
    else:
        ds = ng.data.load_mnist(data_dir, n_train=n, n_test=n_test, classes=None, seed=seed)
    net = ng.mlp(depth, 64, "relu", out_dim=ds.out_dim)
    rng = np.random.RandomState(seed + 7)
    return (ds, net, f0_scale * rng.randn(ds.n_train, ds.out_dim),
            f0_scale * rng.randn(ds.n_test, ds.out_dim))


def run(args) -> dict:
    """Every number of one configuration (module docstring) as a flat dict of arrays."""
    import jax
    import ntkngd as ng
    from ..training.observers import accuracy
    from . import mesh as meshes
    from .kernels import sharded_kernels
    ds, net, f0, f0t = problem(args.n, args.n_test, args.depth, args.f0_scale, args.seed,
                               args.data_dir, args.test_from_train)
    times = np.array([float(t) for t in args.times])
    mesh = meshes.make_mesh(args.devices or None)
    jax.block_until_ready(jax.numpy.zeros(()))
    out: dict = {"times": times, "devices": mesh.devices.size, "processes": jax.process_count(),
                 "n": ds.n_train, "n_test": ds.n_test, "rss_start": peak_rss_gb()}
    t0 = time.perf_counter()
    K = sharded_kernels(net, ds.x_train, ds.x_test, mesh, tile=args.tile, storage=args.storage)
    jax.block_until_ready(K.fwd_train)
    out["time/kernels"], out["rss/kernels"] = time.perf_counter() - t0, peak_rss_gb()
    out["bytes/kernels_per_device"] = K.nbytes_per_device()
    out["max_shard_rows"] = max(s.data.shape[0] for a in K.fwd_train for s in a.addressable_shards)
    if args.save_kernels:
        out.update(gathered_kernels(K))
    for i, m in enumerate(args.methods):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ng.TheoryConditionWarning)
            op = ng.operator(m, K, 0.0)
            traj = ng.predict(op, f0, ds.y_train, f0t, times=times, y_test=ds.y_test)
        out[f"{m}/train"], out[f"{m}/test"] = traj.train, traj.test
        out[f"{m}/test_loss"] = traj.test_loss
        out[f"{m}/test_acc"] = np.array([accuracy(f, ds.y_test) for f in traj.test])
        out[f"{m}/train_loss"] = traj.train_loss
        out[f"time/{m}"], out[f"rss/{m}"] = time.perf_counter() - t0, peak_rss_gb()
        del op
        nxt = args.methods[i + 1] if i + 1 < len(args.methods) else None
        if nxt is None or family(nxt, args.depth) != family(m, args.depth):
            K.clear_cache()                   # factors of one method family at a time
    return out


def gathered_kernels(K) -> dict:
    """The kernels as dense host arrays without ghost rows: Q_l, B_l (l < L) on the training
    points and on test x training points (the dense path's layout), in the storage dtype."""
    from .mesh import gather
    n, L = K.n_train, K.depth
    out = {"kernels/fwd_train": np.stack([gather(a)[:n, :n] for a in K.fwd_train]),
           "kernels/bwd_train": np.stack([gather(a)[:n, :n] for a in K.bwd_train[:L - 1]])
           if L > 1 else np.zeros((0, n, n), K.storage_dtype)}
    if K.has_test:
        out["kernels/fwd_test"] = np.stack([gather(a)[:n].T for a in K.fwd_test_t])
        out["kernels/bwd_test"] = np.stack([gather(a)[:n].T for a in K.bwd_test_t[:L - 1]]) \
            if L > 1 else np.zeros((0, K.n_test, n), K.storage_dtype)
    return out


def save(out: dict, path: str) -> None:
    from ..store import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k.replace("/", "|"): np.asarray(v) for k, v in out.items()})


def load(path: str) -> dict:
    """The dict `save` wrote."""
    with np.load(path) as z:
        return {k.replace("|", "/"): z[k] for k in z.files}


def summary(out: dict) -> str:
    lines = [f"N = {int(out['n'])}, N' = {int(out['n_test'])}, {int(out['devices'])} device(s), "
             f"{int(out['processes'])} process(es): kernels {out['time/kernels']:.1f} s, "
             f"{out['bytes/kernels_per_device'] / 2 ** 30:.2f} GiB per device"]
    for key in sorted(k for k in out if k.endswith("/test_acc")):
        m = key.split("/")[0]
        lines.append(f"  {m:>18s}: test acc {out[key][-1]:.4f}  test loss "
                     f"{out[m + '/test_loss'][-1]:.4f}  ({out['time/' + m]:.1f} s, peak RSS "
                     f"{out['rss/' + m]:.2f} GB)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .mesh import initialize
    initialize()
    import jax
    jax.config.update("jax_enable_x64", True)
    out = run(args)
    if jax.process_index() == 0:
        if args.out:
            save(out, args.out)
        if not args.quiet:
            print(summary(out))
            print(json.dumps({k: float(v) for k, v in out.items() if np.ndim(v) == 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
