"""(h) Unit-wise alpha / width against width, relu and erf: the empirical unit-wise operator's
measured alpha (markers) against gamma (L - 1) + 1/M (lines; gamma = 1/2 relu, 1 erf), and the
relative deviation from isotropy, which shrinks like M^{-1/2}."""
from __future__ import annotations

import numpy as np

from .. import mlp, operator
from ..empirical import empirical_kernels
from ..methods.unitwise import predicted_alpha
from .common import (Context, binary_data, data_record, init_params, legend, log_axis_at, quiet, save_figure,
                     subplots)

NAME = "unit_wise_width"
TITLE = "unit-wise alpha / width against width"
ACTS = {"relu": "tab:red", "erf": "tab:blue"}


def compute(ctx: Context) -> dict:
    p = ctx.profile
    ds = binary_data(p, n_train=min(p.n_train, 48))
    widths = np.asarray(p.unit_widths)
    out = {"widths": widths, "preprocessing": data_record(ds)}
    for act in ACTS:
        rows = []
        for w in ctx.progress(widths, desc=f"{NAME} {act}"):
            def run(w=int(w), act=act):
                net = mlp(p.depth, w, act)
                K = empirical_kernels(net, init_params(net, ds.input_dim, seed=4), ds.x_train)
                op = quiet(operator, "unit_wise", K, 0.0)
                return {"alpha": op.alpha, "deviation": op.deviation, "theory": predicted_alpha(net),
                        "offdiag": float(np.abs(op.train - np.diag(np.diag(op.train))).max())}
            rows.append(ctx.cache.get_or_compute(f"{act}_w{w}", run))
        for k in rows[0]:
            out[f"{act}/{k}"] = np.array([r[k] for r in rows])
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2) = subplots(2, width=5.0)
    w = res["widths"].astype(float)
    for act, color in ACTS.items():
        ax.plot(w, res[f"{act}/theory"] / w, "-", color=color, label=f"{act}: theory")
        ax.plot(w, res[f"{act}/alpha"] / w, "o", color=color, mfc="none", ms=7,
                label=f"{act}: measured")
        ax2.plot(w, res[f"{act}/deviation"], "o-", color=color, mfc="none", label=act)
    ax2.plot(w, res["relu/deviation"][0] * (w / w[0]) ** -0.5, ":", color="0.3",
             label=r"$\propto M^{-1/2}$")
    log_axis_at(ax, res["widths"].tolist())
    ax.set_xlabel("width M")
    ax.set_ylabel(r"$\alpha / M$")
    ax.set_title(rf"unit-wise $\alpha$ / width (L = {ctx.profile.depth}, $\rho$ = 0)")
    ax.grid(alpha=0.3)
    legend(ax)
    for a in (ax2,):
        log_axis_at(a, res["widths"].tolist())
        a.set_yscale("log")
        a.set_xlabel("width M")
        a.set_ylabel(r"$\|G - \alpha I\|_F / \|\alpha I\|_F$")
        a.set_title("deviation from isotropy")
        a.grid(alpha=0.3, which="both")
    legend(ax2)
    return save_figure(fig, ctx, NAME)
