"""(c) The finite-width gap to the infinite-width theory against width (log-log): after one step at
lr = 1/alpha, || f_1(finite) - f_1(theory) || / || f_0 - y || on training and test points: geometric
mean and spread over profile.seeds networks per width, and a power law c M^slope fitted to every
network's point with the slope's 95% confidence interval."""
from __future__ import annotations

import numpy as np

from .. import mlp
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, binary_data, data_record,
                     error_markers, init_params, kfac_data, legend, log_axis_at, one_step,
                     power_fit, record_stats, save_figure, subplots)

NAME = "width_gap"
TITLE = "finite-width gap to theory against width"


def _one(m, width, seed, ds, depth):
    net = mlp(depth, width, "relu")
    r = one_step(net, init_params(net, ds.input_dim, seed), ds, m)
    op, g = r["op"], r["g"]
    train_gap = np.linalg.norm(r["f1"] - (r["f0"] - op.lr * op.train @ g)) / np.linalg.norm(g)
    test_gap = np.nan
    if op.test is not None:
        test_gap = np.linalg.norm(r["f1t"] - (r["f0t"] - op.lr * op.test @ g)) / np.linalg.norm(g)
    return {"train": train_gap, "test": test_gap}


def compute(ctx: Context) -> dict:
    p = ctx.profile
    ds = binary_data(p)
    kds = kfac_data(ds)[0]            # K-FAC: Forster inputs when N > d (the paper's setting)
    widths = np.asarray(p.gap_widths)
    out = {"widths": widths, "preprocessing": data_record(ds, kds), "seeds": p.seeds}
    jobs = [(m, w, s) for m in METHOD_ORDER for w in widths for s in range(p.seeds)]
    rows = {}
    for m, w, s in ctx.progress(jobs, desc=NAME):
        rows[m, w, s] = ctx.cache.get_or_compute(f"{m}_w{w}_s{s}",
                                                 lambda m=m, w=w, s=s: _one(m, int(w), 100 + s, kds if m == "kfac" else ds, p.depth))
    for m in METHOD_ORDER:
        for split in ("train", "test"):
            vals = np.array([[rows[m, w, s][split] for s in range(p.seeds)] for w in widths],
                            dtype=float)
            record_stats(out, f"{m}/{split}", vals)
            fit = power_fit(widths, vals)
            out[f"{m}/{split}_slope"], out[f"{m}/{split}_slope_ci95"] = fit["slope"], fit["ci95"]
            out[f"{m}/{split}_prefactor"] = fit["prefactor"]
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(2, width=5.0)
    w = res["widths"].astype(float)
    for ax, split in zip(axes, ("train", "test")):
        for m in METHOD_ORDER:
            v = res[f"{m}/{split}"]
            if np.all(np.isnan(v)):
                continue
            slope, ci = res[f"{m}/{split}_slope"], res[f"{m}/{split}_slope_ci95"]
            st = {k: res[f"{m}/{split}{sfx}"] for k, sfx in (("mean", ""), ("lo", "_lo"),
                                                            ("hi", "_hi"))}
            error_markers(ax, w, st, MARKERS[m], color=COLORS[m], mfc="none", ms=6,
                          label=LABELS[m] + (f": $M^{{{slope:.2f} \\pm {ci:.2f}}}$"
                                             if np.isfinite(ci) else ""))
            ax.plot(w, res[f"{m}/{split}_prefactor"] * w ** slope, "-", color=COLORS[m], lw=0.8)
        log_axis_at(ax, res["widths"].tolist())
        ax.set_yscale("log")
        ax.set_xlabel("width M")
        ax.set_ylabel(r"$\|f_1 - f_1^{theory}\| / \|f_0 - y\|$")
        ax.set_title(f"one step at lr = 1/alpha, {split} points")
        ax.grid(alpha=0.3, which="both")
    legend(axes[0], loc="lower left")
    fig.suptitle(f"Gap between finite-width NGD and the infinite-width theory: geometric mean "
                 f"and spread of {res['seeds']} networks, power-law fits (slope, 95% interval)",
                 fontsize=9)
    return save_figure(fig, ctx, NAME)
