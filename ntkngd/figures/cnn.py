"""(j) A small CNN on the 8 x 8 digits (0 vs 1, the data module's default preprocessing, images
(N, 8, 8, 1)): two 3x3 SAME convolutions with ReLU, global average pooling, dense readout (L = 3,
`ntkngd.cnn`). Left: training loss per step for every method at the finite-width operator's lr
(1/alpha when isotropic, else 1/lambda_max), finite-width training at several channel counts
(markers), the infinite-width prediction from neural-tangents' per-layer kernels (lines, from the
widest network's own initial outputs; K-FAC and channel-wise have no infinite-width theory, their
dashed lines are the linearized prediction of the widest network's finite-width operator).
Right: measured alpha / (channels) and deviation from isotropy of KFC and channel-wise against
channels."""
from __future__ import annotations

import numpy as np

from .. import data as data_mod
from ..networks.stax_serial import cnn
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, data_record, floor_at,
                     legend, log_axis_at, quiet, save_figure, subplots)

NAME = "cnn"
TITLE = "CNN on 8x8 digits: every method, theory against finite-width training"
FLOOR = 1e-12
# profile name -> (N train, N test, training channel counts, steps, channels of the alpha sweep)
SIZES = {"tiny": (8, 10, (16, 32), 2, (8, 16)),
         "quick": (12, 40, (32, 128), 3, (16, 32, 64, 128)),
         "paper": (40, 100, (128, 512), 6, (32, 64, 128, 256, 512, 1024))}
LABELS_CNN = dict(LABELS, kfac="KFC (K-FAC for conv.)", unit_wise="channel-wise")


def _sizes(ctx: Context):
    return SIZES.get(ctx.profile.name, SIZES["quick"])


def _dataset(n_train: int, n_test: int) -> data_mod.Dataset:
    return data_mod.digits(n_train=n_train, n_test=n_test, classes=(0, 1), seed=0)


def _data(n_train: int, n_test: int) -> tuple:
    ds = _dataset(n_train, n_test)
    img = lambda x: x.reshape(-1, 8, 8, 1)   # noqa: E731
    return img(ds.x_train), ds.y_train, img(ds.x_test), ds.y_test


def _params(net, seed: int = 0):
    import jax
    return net.init_fn(jax.random.PRNGKey(seed), (-1, 8, 8, 1))[1]


def compute(ctx: Context) -> dict:
    from ..training.loop import train
    from .. import empirical_kernels, operator
    n, nt, chans, steps, sweep = _sizes(ctx)
    data = _data(n, nt)
    rec = data_record(_dataset(n, nt))
    rec["preprocessing"] += " + rows reshaped to 8 x 8 single-channel images"
    out = {"n_train": n, "steps": np.arange(steps + 1), "channels": np.asarray(chans),
           "sweep": np.asarray(sweep), "preprocessing": rec}
    for c in chans:
        net = cnn(c)
        params = _params(net)
        for m in ctx.progress(METHOD_ORDER, desc=f"{NAME} C={c}"):
            def run(m=m, net=net, params=params):
                log = quiet(train, m, net, params, data, steps=steps, lr=None,
                            damping=None)
                return {"loss": log.train_loss, "theory": log.pred_inf_train_loss,
                        "emp": log.pred_emp_train_loss, "lr": log.lr, "alpha": log.alpha}
            res = ctx.cache.get_or_compute(f"train_{m}_c{c}_n{n}_s{steps}", run)
            for k, v in res.items():
                out[f"{m}/c{c}/{k}"] = v
    for c in ctx.progress(sweep, desc=f"{NAME} sweep"):
        def iso(c=int(c)):
            net = cnn(c)
            K = empirical_kernels(net, _params(net, seed=1), data[0])
            res = {}
            for m in ("kfac", "unit_wise"):
                op = quiet(operator, m, K, None)
                res[m] = (op.alpha, op.deviation)
            return res
        res = ctx.cache.get_or_compute(f"iso_c{c}_n{n}", iso)
        for m, (a, dv) in res.items():
            out.setdefault(f"{m}/alpha", []).append(a)
            out.setdefault(f"{m}/deviation", []).append(dv)
    return {k: np.asarray(v) for k, v in out.items()}


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2) = subplots(2, width=5.4)
    t, chans = res["steps"], [int(c) for c in res["channels"]]
    widest = max(chans)
    fills = ["none", "full", "left", "right"]
    for m in METHOD_ORDER:
        theory = res[f"{m}/c{widest}/theory"]
        if np.all(np.isfinite(theory)):
            ax.plot(t, floor_at(theory, FLOOR), "-", color=COLORS[m], lw=1.3)
        else:
            ax.plot(t, floor_at(res[f"{m}/c{widest}/emp"], FLOOR), "--", color=COLORS[m], lw=1.0)
        for c, fill in zip(chans, fills):
            ax.plot(t, floor_at(res[f"{m}/c{c}/loss"], FLOOR), MARKERS[m], color=COLORS[m],
                    ms=5, fillstyle=fill, mfc=None if fill != "none" else "none",
                    label=LABELS_CNN[m] if c == widest else None)
    for c, fill in zip(chans, fills):
        ax.plot([], [], "o", color="0.3", fillstyle=fill, mfc=None if fill != "none" else "none",
                label=f"{c} channels")
    ax.set_yscale("log")
    ax.set_xticks(t)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("lines: infinite width (dashed: finite-width operator)", fontsize=9)
    legend(ax, loc="lower left")
    sweep = res["sweep"]
    for m in ("kfac", "unit_wise"):
        ax2.plot(sweep, res[f"{m}/alpha"] / sweep, MARKERS[m] + "-", color=COLORS[m],
                 mfc="none", label=f"{LABELS_CNN[m]}: alpha / channels")
        ax2.plot(sweep, res[f"{m}/deviation"], MARKERS[m] + ":", color=COLORS[m],
                 label=f"{LABELS_CNN[m]}: deviation from isotropy")
    log_axis_at(ax2, sweep)
    ax2.set_yscale("log")
    ax2.set_xlabel("channels")
    ax2.set_title("finite-width KFC and channel-wise operators", fontsize=9)
    ax2.grid(alpha=0.3)
    legend(ax2)
    fig.suptitle(f"CNN (conv3x3-relu x 2, GAP, dense), 8x8 digits 0 vs 1, "
                 f"N = {int(res['n_train'])}", fontsize=10)
    return save_figure(fig, ctx, NAME)
