"""Benchmark: finite-width NGD steps and empirical per-layer kernels, as ratios measured in one run.

N = 100 points on the unit sphere in d = 784, +-0.5 labels, 3 ReLU layers of width 4096, one output,
float32. Prints each method's jitted training step (`engine.train_step`: features, dual solves and
update on device, as ntkngd.train runs it) and the eager ntkngd.ngd_direction call (with host
input checks) over one jitted plain gradient step, the empirical per-layer kernels' time over neural-tangents'
`empirical_ntk_fn` (NTK-vector products, implementation=2) for the total NTK, and the peak memory.
Targets: <= 1.5x for exact, BD, BTD, K-FAC and the diagonal Fisher; <= 3x unit-wise, E-KFAC and
Shampoo; kernels >= 10x faster; peak < 3 GB.

OpenBLAS runs on one thread (OPENBLAS_NUM_THREADS=1 unless set in the environment; it must be
set before numpy loads): XLA:CPU hands the methods' small LAPACK calls (Cholesky, eigh and
triangular solves of N x N systems) to scipy's OpenBLAS, whose started worker threads then spin
on the cores XLA's own threads use. With OPENBLAS_NUM_THREADS=2 K-FAC's step measured 1.14-1.45
plain gradient steps on a 2-core machine (1.0-1.14 with one thread; 1.85 on a busy machine
when its step still had an N x N eigh). The gradient step and every wide product run on XLA's
own threads and do not use OpenBLAS. Usage:
python experiments/bench_finite.py [--width 4096] [--repeats 7] [--skip-nt]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import engine  # noqa: E402
from ntkngd.networks import empirical  # noqa: E402
from ntkngd.data import sphere  # noqa: E402


METHODS = ("exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise", "diagonal", "ekfac",
           "shampoo")


def _timed(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _interleaved_ratio(fn, ref, repeats: int) -> float:
    """Median over `repeats` of time(fn) / time(ref) measured back to back (robust to a machine
    whose load drifts between measurements), after one warm-up call of each."""
    jax.block_until_ready(fn())
    jax.block_until_ready(ref())
    ratios = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(ref())
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ratios.append((time.perf_counter() - t) / t_ref)
    return float(np.median(ratios))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    ap.add_argument("--skip-nt", action="store_true", help="skip the slow neural-tangents timing")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help="methods to time")
    args = ap.parse_args()

    data = sphere(args.n, 10, 784, seed=0)
    x = jnp.asarray(data.x_train, jnp.float32)
    y = jnp.asarray(data.y_train, jnp.float32)
    net = ng.mlp(args.depth, args.width, "relu", W_std=2 ** 0.5, b_std=0.0, out_dim=1)
    _, params = net.init_fn(jax.random.PRNGKey(0), (-1, x.shape[1]))

    @jax.jit
    def grad_step(p):
        loss = lambda q: 0.5 * jnp.sum((net.apply_fn(q, x) - y) ** 2) / x.shape[0]
        g = jax.grad(loss)(p)
        return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)

    t_grad = _timed(lambda: grad_step(params), args.repeats)
    print(f"plain jitted gradient step: {t_grad:.4f} s   (N={args.n}, width={args.width}, "
          f"L={args.depth}, float32, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"median of {args.repeats})")

    lr = jnp.asarray(1.0, jnp.float32)
    for method in args.methods:
        m = ng.get_method(method)
        t = _timed(lambda: engine.train_step(m, net, ng.losses.mse, None, params, x, y, lr),
                   args.repeats)
        t_eager = _timed(lambda: engine.ngd_direction(method, net, params, x, y), args.repeats)
        pair = _interleaved_ratio(
            lambda: engine.train_step(m, net, ng.losses.mse, None, params, x, y, lr),
            lambda: grad_step(params), args.repeats)
        print(f"{method:>18s} jitted step: {t:.4f} s   ratio to gradient step {t / t_grad:6.2f}"
              f"   (interleaved: {pair:5.2f}; ngd_direction with host checks: "
              f"{t_eager / t_grad:6.2f})")

    t_emp = _timed(lambda: empirical.empirical_kernels(net, params, x).blocks_train, args.repeats)
    print(f"empirical per-layer kernels: {t_emp:.4f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"peak memory (maxrss) of the ntkngd steps and kernels: {peak:.2f} GB")
    if not args.skip_nt:
        import neural_tangents as nt
        ntk = jax.jit(nt.empirical_ntk_fn(net.apply_fn, trace_axes=(), vmap_axes=0,
                                          implementation=2))
        t_nt = _timed(lambda: ntk(x, None, params), 1)
        print(f"neural_tangents.empirical_ntk_fn (NTK-vector products): {t_nt:.3f} s   "
              f"speed-up of per-layer kernels {t_nt / t_emp:.1f}x")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(f"peak memory (maxrss) after neural-tangents' empirical NTK: {peak:.2f} GB")


if __name__ == "__main__":
    main()
