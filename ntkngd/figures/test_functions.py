"""(e) Test loss and accuracy per method: the NGD methods train equally fast but put different
functions on the test points. Theory (infinite-width G', lines / hatched bars) against the
finite network (markers / solid bars)."""
from __future__ import annotations

import numpy as np

from .. import operator, predict
from ..training.loop import train
from ..training.observers import accuracy
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, legend, quiet, save_figure,
                     standard_setup, subplots)

NAME = "test_functions"
TITLE = "test loss and accuracy per method"


def compute(ctx: Context) -> dict:
    p = ctx.profile
    s = standard_setup(p, seed=3)
    out = {"steps": np.arange(p.steps + 1), "preprocessing": s.record()}
    for m in ctx.progress(METHOD_ORDER, desc=NAME):
        sm = s.for_method(m)          # K-FAC: Forster inputs when N > d (the paper's setting)

        def run(m=m, ds=sm.ds, net=sm.net, params=sm.params, data=sm.data, Ka=sm.kernels,
                damping=None):
            op = quiet(operator, m, Ka, 0.0)
            log = quiet(train, m, net, params, data, steps=p.steps, lr=op.lr, damping=damping)
            res = {"test_loss": log.test_loss, "theory_test_loss": log.pred_inf_test_loss,
                   "test_acc": log.test_acc, "train_loss": log.train_loss, "lr": log.lr}
            if op.test is not None:
                f0 = np.asarray(net.apply_fn(params, ds.x_train), float)
                f0t = np.asarray(net.apply_fn(params, ds.x_test), float)
                traj = predict(op, f0, ds.y_train, f0t, lr=log.lr, steps=p.steps)
                res["theory_test_acc"] = np.array([accuracy(f, ds.y_test) for f in traj.test])
            else:
                res["theory_test_acc"] = np.full(p.steps + 1, np.nan)
            return res
        for k, v in ctx.cache.get_or_compute(m, run).items():
            out[f"{m}/{k}"] = v
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2) = subplots(2, width=5.2)
    t = res["steps"]
    for m in METHOD_ORDER:
        th = res[f"{m}/theory_test_loss"]
        if m == "unit_wise":   # no infinite-width test operator: finite-width kernels' prediction
            ax.plot(t, th, "--", color=COLORS[m], lw=1.2,
                    label="unit-wise: empirical-kernel prediction")
        elif not np.all(np.isnan(th)):
            ax.plot(t, th, "-", color=COLORS[m], lw=1.4)
        ax.plot(t, res[f"{m}/test_loss"], MARKERS[m], color=COLORS[m], mfc="none", ms=6,
                label=LABELS[m])
    ax.set_xlabel("step (lr = 1/alpha)")
    ax.set_ylabel("test loss")
    ax.set_title("test loss: lines theory, markers finite width")
    ax.grid(alpha=0.3)
    legend(ax)
    x = np.arange(len(METHOD_ORDER))
    meas = [res[f"{m}/test_acc"][-1] for m in METHOD_ORDER]
    theo = [res[f"{m}/theory_test_acc"][-1] for m in METHOD_ORDER]
    ax2.bar(x - 0.2, meas, 0.4, color=[COLORS[m] for m in METHOD_ORDER], label="finite width")
    ax2.bar(x + 0.2, np.nan_to_num(theo), 0.4, color="white",
            edgecolor=[COLORS[m] for m in METHOD_ORDER], hatch="//", label="theory")
    for i, v in enumerate(theo):
        if np.isnan(v):
            ax2.text(x[i] + 0.2, 0.05, "no theory", rotation=90,
                     ha="center", va="bottom", fontsize=7, transform=ax2.get_xaxis_transform())
    ax2.set_xticks(x, [LABELS[m] for m in METHOD_ORDER], rotation=30, ha="right", fontsize=8)
    lo = min(meas + [v for v in theo if not np.isnan(v)])
    ax2.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax2.set_ylabel(f"test accuracy after {int(t[-1])} steps")
    ax2.set_title("test accuracy per method")
    legend(ax2, loc="upper left")
    return save_figure(fig, ctx, NAME)
