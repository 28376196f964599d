"""(a) Training loss against step for every method, at its lr = 1/alpha and at half of it:
infinite-width theory (lines, from the first network's own initial outputs) against the finite
networks trained in parameter space (markers: geometric mean over profile.seeds networks, bars:
geometric standard deviation). A network's loss below `common.loss_floor` is round-off (its
digits differ between BLAS kernels) and enters the mean and spread as that floor."""
from __future__ import annotations

import numpy as np

from .. import operator
from . import JSON_DIGITS
from ..training.loop import train
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, error_markers, floor_at,
                     legend, loss_floor, quiet, record_stats, save_figure, standard_setup, subplots)

NAME = "convergence"
TITLE = "training loss against step, theory against finite-width training"
FRACTIONS = (1.0, 0.5)
FLOOR = 1e-12


def _runs(ctx: Context, s, m: str, seed: int) -> dict:
    sm = s.for_method(m)              # K-FAC: Forster inputs when N > d (the paper's setting)
    net, params, data, Ka = sm.net, sm.params, sm.data, sm.kernels

    def run(damping=None):
        res = {}
        lr_opt = quiet(operator, m, Ka, 0.0).lr      # theory's 1/alpha (GD: 1/lambda_max)
        for frac in FRACTIONS:
            log = quiet(train, m, net, params, data, steps=ctx.profile.steps,
                        lr=frac * lr_opt, damping=damping)
            tag = f"{frac:g}"
            res.update({f"lr_{tag}": log.lr, f"loss_{tag}": log.train_loss,
                        f"theory_{tag}": log.pred_inf_train_loss,
                        f"theory_emp_{tag}": log.pred_emp_train_loss})
        return res
    return ctx.cache.get_or_compute(m if seed == 0 else f"{m}_s{seed}", run)


def compute(ctx: Context) -> dict:
    p = ctx.profile
    setups = [standard_setup(p, seed=k) for k in range(p.seeds)]
    out = {"steps": np.arange(p.steps + 1), "preprocessing": setups[0].record(),
           "seeds": p.seeds}
    floor = loss_floor(p.width, setups[0].ds.y_train, p.dtype, JSON_DIGITS)
    out["loss_floor"] = f"{floor:.3g}"     # a string: store.vouched writes floats < 1e-20 as 0
    for m in ctx.progress(METHOD_ORDER, desc=NAME):
        runs = [_runs(ctx, s, m, k) for k, s in enumerate(setups)]
        for k, v in runs[0].items():          # theory and lr: the first network's
            if not k.startswith("loss_"):
                out[f"{m}/{k}"] = v
        for frac in FRACTIONS:
            tag = f"loss_{frac:g}"
            losses = np.maximum(np.stack([r[tag] for r in runs], axis=-1), floor)
            record_stats(out, f"{m}/{tag}", losses)
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(len(FRACTIONS), width=5.2)
    t = res["steps"]
    for ax, frac in zip(axes, FRACTIONS):
        tag = f"{frac:g}"
        for m in METHOD_ORDER:
            ax.plot(t, floor_at(res[f"{m}/theory_{tag}"], FLOOR), "-", color=COLORS[m], lw=1.4)
            st = {k: floor_at(res[f"{m}/loss_{tag}{sfx}"], FLOOR)
                  for k, sfx in (("mean", ""), ("lo", "_lo"), ("hi", "_hi"))}
            error_markers(ax, t, st, MARKERS[m], color=COLORS[m], ms=6, mfc="none",
                          label=LABELS[m])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"lr = {frac:g} / alpha (GD: {frac:g} / lambda_max)")
        ax.grid(alpha=0.3)
    axes[1].plot([], [], "-", color="k", label="theory (infinite width)")
    legend(axes[1], loc="upper right", ncol=1)
    fig.suptitle(f"Training loss, width {ctx.profile.width}, N = {ctx.profile.n_train}; markers: "
                 f"geometric mean and spread of {res['seeds']} networks (theory: the first's; "
                 f"values below {FLOOR:g} drawn at {FLOOR:g})", fontsize=9)
    return save_figure(fig, ctx, NAME)
