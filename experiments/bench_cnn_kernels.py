"""Benchmark: per-layer analytic kernels of a CNN over one neural-tangents kernel_fn for its NTK.

Same inputs, same run: N 8 x 8 single-channel images (train x train), float64, a CNN with
L trainable layers (3x3 SAME convolutions, ReLU, global average pooling, dense readout).
`ntkngd.analytic_kernels` (all L blocks, the prefix of neural-tangents' recursion shared) against
one `kernel_fn(x, None, 'ntk')`. Target: ratio <= L + 1. Cold = first call (tracing), warm = repeat.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402


def _time(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def main(n: int = 40, convs: int = 2) -> None:
    x = np.random.RandomState(0).randn(n, 8, 8, 1)
    net = ng.cnn(channels=64, depth=convs)
    L = net.depth
    for label in ("cold", "warm"):
        t_ref = _time(lambda: net.kernel_fn(x, None, "ntk"))
        t_blocks = _time(lambda: ng.analytic_kernels(net, x).blocks_train)
        print(f"{label}: N = {n}, L = {L}: nt kernel_fn {t_ref:.3f} s, per-layer blocks "
              f"{t_blocks:.3f} s, ratio {t_blocks / t_ref:.2f} (target <= L + 1 = {L + 1})")
    K = ng.analytic_kernels(net, x)
    err = np.abs(np.asarray(K.ntk_train) - np.asarray(net.kernel_fn(x, None, "ntk"))).max()
    print(f"max |sum_l Theta_l - NTK| = {err:.2e}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--convs", type=int, default=2)
    a = p.parse_args()
    main(a.n, a.convs)
