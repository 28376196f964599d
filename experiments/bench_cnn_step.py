"""Benchmark: one jitted CNN NGD step against one jitted plain gradient step.

Same run, same inputs: N 8 x 8 single-channel images, float64, `ntkngd.cnn(channels, depth=2)`
(L = 3: two 3x3 SAME convolutions, ReLU, global average pooling, dense readout). The NGD step is
`ntkngd.engine.train_step` (features, per-layer kernels, the method's solve, the update, all on
device); the gradient step is jax.jit of params - lr grad MSE. Both are compiled first, then timed
as the median of `--repeats` warm calls. Target (issue 19): ratio <= 3 for exact, block-diagonal
and K-FAC (KFC) at 64 channels, N = 12.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd.engine import train_step  # noqa: E402
from bench_finite import _timed as _median  # noqa: E402  (median after one warm-up call)


def main(n: int = 12, channels: int = 64, repeats: int = 20, damping: float = 1e-3) -> None:
    r = np.random.RandomState(0)
    x, y = jnp.asarray(r.randn(n, 8, 8, 1)), jnp.asarray(r.randn(n, 1))
    net = ng.cnn(channels=channels, depth=2)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    lr = jnp.asarray(0.1)

    @jax.jit
    def gd_step(p):
        g = jax.grad(lambda q: 0.5 * jnp.mean(jnp.sum((net.apply_fn(q, x) - y) ** 2, -1)))(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)

    t_gd = _median(lambda: gd_step(params), repeats)
    print(f"N = {n}, {channels} channels, L = {net.depth}, damping {damping:g}, "
          f"{jax.devices()[0].platform}: jitted gradient step {1e3 * t_gd:.2f} ms")
    mse = ng.get_loss("mse")
    for name in ("exact", "block_diagonal", "kfac"):
        m = ng.get_method(name)
        t = _median(lambda: train_step(m, net, mse, damping, params, x, y, lr)[0], repeats)
        print(f"  {name:15s} jitted NGD step {1e3 * t:8.2f} ms   ratio {t / t_gd:6.2f} "
              "(target <= 3)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--damping", type=float, default=1e-3)
    a = p.parse_args()
    main(a.n, a.channels, a.repeats, a.damping)
