"""Matrix-free sharded path against the dense path, same inputs, N = 1,000 and 4,000 in one run.

MNIST (10 classes, one-hot; N training and --n-test test points from the bundled split), 3-layer
ReLU MLP at infinite width, f_0 = 0, float64. Each path: per-layer kernels, then the operators of
gd, exact, BD, BTD, K-FAC and their t -> infinity test predictions (dense: `ng.predict` with
times=[inf]). The sharded path
runs on --devices simulated CPU devices (set before JAX loads) with float64 or --storage float32
kernels. Prints both times, their ratio and the largest difference of the test predictions, and
the memory model of both paths (ntkngd.sharded.memory), so that users see where the crossover is.

    OPENBLAS_NUM_THREADS=1 python experiments/bench_sharded.py --ns 1000 4000 --devices 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ns", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--storage", default=None)
    return p.parse_args(argv)


ARGS = _args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

METHODS = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac")


def path(ng, ds, net, mesh, storage):
    """(seconds for kernels, seconds per method, test predictions at t = inf per method)."""
    import jax
    f0, f0t = np.zeros_like(ds.y_train), np.zeros_like(ds.y_test)
    t0 = time.perf_counter()
    if mesh is None:
        K = ng.analytic_kernels(net, ds.x_train, ds.x_test)
    else:
        K = ng.sharded.sharded_kernels(net, ds.x_train, ds.x_test, mesh, storage=storage)
    jax.block_until_ready(K.fwd_train)
    t_k = time.perf_counter() - t0
    times, preds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        for m in METHODS:
            t0 = time.perf_counter()
            op = ng.operator(m, K, 0.0)
            preds[m] = ng.predict(op, f0, ds.y_train, f0t, times=[np.inf]).test[-1]
            times[m] = time.perf_counter() - t0
    return t_k, times, preds


def main(args) -> int:
    import jax
    jax.config.update("jax_enable_x64", True)
    import ntkngd as ng
    from ntkngd.linalg import serial_blas
    from ntkngd.sharded import memory, run
    mesh = ng.sharded.make_mesh(args.devices)
    sbytes = 4 if args.storage == "float32" else 8
    for n in args.ns:
        ds, net, _, _ = run.problem(n, args.n_test)
        with serial_blas():
            kd, md, pd = path(ng, ds, net, None, None)
        ks, ms, ps = path(ng, ds, net, mesh, args.storage)
        td, ts = kd + sum(md.values()), ks + sum(ms.values())
        diff = max(float(np.max(np.abs(ps[m] - pd[m])) / np.max(np.abs(pd[m]))) for m in METHODS)
        print(f"N = {n}, N' = {args.n_test}: dense {td:.1f} s (kernels {kd:.1f}, "
              + ", ".join(f"{m} {s:.1f}" for m, s in md.items()) + ")")
        print(f"  sharded on {args.devices} device(s): {ts:.1f} s (kernels {ks:.1f}, "
              + ", ".join(f"{m} {s:.1f}" for m, s in ms.items()) + ")")
        print(f"  RATIO sharded / dense = {ts / td:.2f}; test predictions differ by at most "
              f"{diff:.1e} (relative)")
        sh = memory.sharded_bytes(n, args.n_test, 3, args.devices, sbytes, 8)
        print(f"  memory model: dense {memory.dense_bytes(n, args.n_test) / 1e9:.2f} GB on one "
              f"host, sharded {sh['peak'] / 1e9:.2f} GB per device "
              f"({args.devices * sh['peak'] / 1e9:.2f} GB in all)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
