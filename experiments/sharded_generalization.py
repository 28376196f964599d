"""Generalization at the fixed points on MNIST with the sharded backend, N from 1,000 up.

For each N (a fresh process each, so that its peak memory is its own): 10-class MNIST (one-hot
targets, the library's preprocessing; the bundled test split gives disjoint training and test
draws, so N + N' <= 10,000 there: pass --data-dir for the full data set), a 3-layer ReLU MLP at
infinite width, f_0 = 0, and the t -> infinity test loss and accuracy of GD, exact NGD, BD, BTD
and K-FAC on --devices simulated CPU devices (row-sharded kernels, distributed Cholesky,
`python -m ntkngd.sharded.run`). Prints per N the time per stage, the peak resident memory
against the dense path's estimate (ntkngd.sharded.memory), the largest row block any device
holds, and the memory model at N = 60,000 on 8 accelerators.

    OPENBLAS_NUM_THREADS=1 python experiments/sharded_generalization.py --ns 1000 2000 4000 8000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ntkngd.sharded import memory  # noqa: E402  (no JAX: the runs are subprocesses)
from ntkngd.sharded.run import METHODS, load  # noqa: E402


def one(n: int, n_test: int, devices: int, storage: str, data_dir, methods,
        overlap: bool = False) -> dict:
    """Run one N in a fresh process; its numbers (ntkngd.sharded.run's dict) plus the wall time."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"),
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.npz")
        args = [sys.executable, "-m", "ntkngd.sharded.run", "--n", str(n), "--n-test",
                str(n_test), "--devices", str(devices), "--methods", *methods, "--out", out,
                "--quiet"]
        if storage:
            args += ["--storage", storage]
        if data_dir:
            args += ["--data-dir", data_dir]
        if overlap:
            args += ["--test-from-train"]
        t0 = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"N = {n} failed:\n{proc.stderr[-4000:]}")
        res = load(out)
    res["wall"] = time.perf_counter() - t0
    return res


def row(res: dict, devices: int, storage_bytes: int, methods) -> str:
    n, nt = int(res["n"]), int(res["n_test"])
    peak = max(float(res[k]) for k in res if k.startswith("rss/"))
    base = float(res["rss_start"])                # JAX, neural-tangents and the data
    dense = memory.dense_bytes(n, nt) / 2 ** 30
    model = devices * memory.sharded_bytes(n, nt, 3, devices, storage_bytes, 8)["peak"] / 2 ** 30
    head = (f"N = {n:6d}  N' = {nt}  wall {res['wall']:7.1f} s  kernels "
            f"{float(res['time/kernels']):6.1f} s  peak RSS {peak:6.2f} GiB, {peak - base:6.2f} "
            f"above the start (model {model:5.2f}; dense estimate {dense:6.2f} GiB: "
            f"{100 * peak / dense:5.1f}%)  largest row block "
            f"{int(res['max_shard_rows'])} of {n}")
    lines = [head]
    for m in methods:
        lines.append(f"    {m:>18s}: test acc {float(res[m + '/test_acc'][-1]):.4f}  test loss "
                     f"{float(res[m + '/test_loss'][-1]):.4f}  train loss "
                     f"{float(res[m + '/train_loss'][-1]):.1e}  {float(res['time/' + m]):7.1f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ns", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--devices", type=int, default=2, help="simulated CPU devices")
    p.add_argument("--storage", default="float32", help="kernel storage dtype")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--test-from-train", type=int, nargs="*", default=[], metavar="N",
                   help="these N draw their test points from the training points (memory and "
                        "time only: the bundled split has 10,000 images, N + N' cannot exceed it)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    sbytes = 4 if args.storage == "float32" else 8
    rows = []
    for n in args.ns:
        overlap = n in args.test_from_train
        res = one(n, args.n_test, args.devices, args.storage, args.data_dir, args.methods, overlap)
        print(row(res, args.devices, sbytes, args.methods) + (
            "\n    (test points = training points: accuracy not a generalization measure)"
            if overlap else ""), flush=True)
        rows.append({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in res.items()})
    print("memory model (ntkngd.sharded.memory):")
    for n, nt, dev, s, c in ((10000, 10000, 4, 4, 8), (60000, 10000, 8, 4, 8),
                             (60000, 10000, 8, 4, 4)):
        print("  " + memory.report(n, nt, 3, dev, s, c))
    if args.json:
        from ntkngd.store import atomic_path
        with atomic_path(args.json) as tmp, open(tmp, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
