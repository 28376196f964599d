"""Demo: for each method, predicted and measured alpha and the one-step training loss on
scikit-learn's digits (0 vs 1, +-0.5 targets, N = 40, prepared as the paper's authors do: one
global mean and std, then unit-norm rows; --whiten PCA-whitens first), infinite width and a
finite network of width 2048 trained one step at lr = 1/alpha.

    python experiments/demo.py [--width 2048] [--n-train 40]
"""
from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402


def main(width: int, n_train: int, depth: int, whiten: bool = False) -> None:
    ds = ng.data.digits(n_train=n_train, n_test=100, classes=(0, 1), whiten=whiten)
    net = ng.mlp(depth, width, "relu")
    params = net.init_fn(jax.random.PRNGKey(0), (-1, ds.input_dim))[1]
    Ka = ng.analytic_kernels(net, ds.x_train, ds.x_test)
    Ke = ng.empirical_kernels(net, params, ds.x_train, ds.x_test)
    f0 = np.asarray(net.apply_fn(params, ds.x_train))
    loss0 = float(ng.losses.mse.value(f0, ds.y_train))
    print(f"{ds.name} ({ds.preprocessing}): N = {ds.n_train}, d = {ds.input_dim}; L = {depth}, "
          f"width {width}; initial training loss {loss0:.4g}")
    print(f"{'method':>18} {'alpha theory':>13} {'alpha (inf)':>12} {'alpha (M)':>11} "
          f"{'dev (M)':>9} {'loss 1 theory':>14} {'loss 1 (M)':>11} {'fall':>8}")
    for m in ng.METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inf = ng.operator(m, Ka)
            emp = ng.operator(m, Ke, damping=None)
            d = ng.ngd_direction(m, net, params, ds.x_train, ds.y_train, damping=None)
        p1 = jax.tree_util.tree_map(lambda p, q: p - inf.lr * q, params, d)
        loss1 = float(ng.losses.mse.value(np.asarray(net.apply_fn(p1, ds.x_train)), ds.y_train))
        theory1 = ng.predict(inf, f0, ds.y_train, steps=1).train_loss[1]
        pred = "-" if inf.alpha_theory is None else f"{inf.alpha_theory:.6g}"
        print(f"{m:>18} {pred:>13} {inf.alpha:12.6g} {emp.alpha:11.6g} {emp.deviation:9.1e} "
              f"{theory1:14.3e} {loss1:11.3e} {loss0 / loss1:7.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--whiten", action="store_true", help="PCA-whiten the digits first")
    a = ap.parse_args()
    main(a.width, a.n_train, a.depth, a.whiten)
