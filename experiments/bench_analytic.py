"""Benchmark of the analytic pipeline (issue: core simulator).

N = 1000 training and 500 test points, d = 784, L = 3 (ReLU, width only matters for unit-wise),
float64. Times kernels + every method's operator + 100 time points of predictions (train and test)
and divides by a reference measured in the same run: one neural-tangents
`kernel_fn(x_test, x_train, 'ntk')` plus one N x N eigendecomposition. Prints cold (first call,
including neural-tangents' tracing) and warm ratios (the median over --repeats runs; the machine
is shared). BLAS/LAPACK run on one thread (set before numpy loads, as for the reference), so the
ratio does not depend on how busy the other cores are. Target: ratio <= 3.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402


def pipeline(net, x, xt, y, f0, f0t):
    K = ng.analytic_kernels(net, x, xt)
    times = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        for method in ng.METHODS:
            t = time.perf_counter()
            op = ng.operator(method, K)
            traj = ng.predict(op, f0, y, None if op.test is None else f0t, steps=99)
            assert np.all(np.isfinite(traj.train_loss))
            times[method] = time.perf_counter() - t
    return K, times, time.perf_counter() - t0


def _run(label, net, x, xt, y, f0, f0t, sym) -> float:
    t = time.perf_counter()
    net.kernel_fn(xt, x, "ntk").block_until_ready()
    t_kernel = time.perf_counter() - t
    t = time.perf_counter()
    np.linalg.eigh(sym)
    t_eigh = time.perf_counter() - t
    ref = t_kernel + t_eigh
    t = time.perf_counter()
    K, per_method, t_methods = pipeline(net, x, xt, y, f0, f0t)
    total = time.perf_counter() - t
    print(f"[{label}] reference: kernel_fn(test, train) {t_kernel:.3f} s + eigh(N x N) "
          f"{t_eigh:.3f} s = {ref:.3f} s")
    print(f"[{label}] ntkngd: kernels {total - t_methods:.3f} s, operators + 100-point predictions "
          f"{t_methods:.3f} s (" + ", ".join(f"{m} {s:.2f}" for m, s in per_method.items())
          + f"), total {total:.3f} s")
    print(f"[{label}] RATIO total / reference = {total / ref:.2f}  (target <= 3)")
    return total / ref


def main(n: int = 1000, n_test: int = 500, d: int = 784, repeats: int = 5) -> None:
    rng = np.random.RandomState(0)
    x, xt = rng.randn(n, d), rng.randn(n_test, d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)
    y = np.sign(rng.randn(n, 1)) / 2
    f0, f0t = 0.1 * rng.randn(n, 1), 0.1 * rng.randn(n_test, 1)
    net = ng.mlp(3, 4096, "relu")
    sym = rng.randn(n, n)
    sym = sym @ sym.T
    _run("cold", net, x, xt, y, f0, f0t, sym)
    warm = [_run(f"warm {i + 1}", net, x, xt, y, f0, f0t, sym) for i in range(repeats)]
    print(f"RATIO warm, median of {repeats}: {np.median(warm):.2f} (min {min(warm):.2f}, "
          f"max {max(warm):.2f}; target <= 3)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    main(a.n, a.n_test, a.d, a.repeats)
