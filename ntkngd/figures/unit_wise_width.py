"""(h) Unit-wise alpha / width against width, relu and erf: the empirical unit-wise operator's
measured alpha (markers: mean and standard deviation over profile.seeds networks) against
gamma (L - 1) + 1/M (lines; gamma = 1/2 relu, 1 erf), and the relative deviation from isotropy
(geometric mean and spread) with a fitted power law c M^slope (95% interval of the slope)."""
from __future__ import annotations

import numpy as np

from .. import mlp, operator
from ..networks.empirical import empirical_kernels
from ..methods.unitwise import predicted_alpha
from .common import (Context, binary_data, data_record, error_markers, init_params, legend,
                     log_axis_at, power_fit, quiet, record_stats, save_figure, subplots)

NAME = "unit_wise_width"
TITLE = "unit-wise alpha / width against width"
ACTS = {"relu": "tab:red", "erf": "tab:blue"}
ROUNDOFF = 1e-8       # relative round-off of G, a sum over about 2 M units per sample


def compute(ctx: Context) -> dict:
    p = ctx.profile
    ds = binary_data(p, n_train=min(p.n_train, 48))
    widths = np.asarray(p.unit_widths)
    out = {"widths": widths, "preprocessing": data_record(ds), "seeds": p.seeds}
    for act in ACTS:
        rows = []
        for w in ctx.progress(widths, desc=f"{NAME} {act}"):
            per = []
            for k in range(p.seeds):
                def run(w=int(w), act=act, seed=4 + k):
                    net = mlp(p.depth, w, act)
                    K = empirical_kernels(net, init_params(net, ds.input_dim, seed=seed),
                                          ds.x_train)
                    op = quiet(operator, "unit_wise", K, 0.0)
                    return {"alpha": op.alpha, "deviation": op.deviation,
                            "theory": predicted_alpha(net),
                            "offdiag": float(np.abs(op.train - np.diag(np.diag(op.train))).max())}
                per.append(ctx.cache.get_or_compute(f"{act}_w{w}" + (f"_s{k}" if k else ""), run))
            rows.append({key: np.array([float(r[key]) for r in per]) for key in per[0]})
        alpha = np.array([r["alpha"] for r in rows])                  # (widths, seeds)
        out[f"{act}/theory"] = np.array([r["theory"][0] for r in rows])
        out[f"{act}/alpha"] = alpha.mean(1)
        out[f"{act}/alpha_std"] = alpha.std(1, ddof=1) if p.seeds > 1 else 0 * alpha[:, 0]
        # every network's deviation: round-off (all units active, erf) recorded as 0; erf's
        # non-zero values come from which per-unit eigenvalues fall under the rank cut, which
        # the BLAS kernel decides, so they are kept to one significant digit
        dev = np.array([r["deviation"] for r in rows])
        dev = np.where(dev <= ROUNDOFF, 0.0, dev)
        if act == "erf":
            dev = np.array([[float(f"{v:.1g}") for v in row] for row in dev])
        record_stats(out, f"{act}/deviation", dev)
        # erf: a mixture of round-off (all units active: G = alpha I to 1e-16) and ~1e-4 (units
        # under the per-unit rank cut) across networks, no power law; relu: M^-1/2 expected
        fit = power_fit(widths, dev) if act == "relu" else \
            {"slope": np.nan, "ci95": np.nan, "prefactor": np.nan}
        out[f"{act}/deviation_slope"], out[f"{act}/deviation_slope_ci95"] = fit["slope"], fit["ci95"]
        out[f"{act}/deviation_prefactor"] = fit["prefactor"]
        off = np.array([r["offdiag"].max() / r["alpha"].mean() for r in rows])
        out[f"{act}/offdiag"] = np.where(off <= ROUNDOFF, 0.0, off)      # relative to alpha
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2) = subplots(2, width=5.0)
    w = res["widths"].astype(float)
    for act, color in ACTS.items():
        ax.plot(w, res[f"{act}/theory"] / w, "-", color=color, label=f"{act}: theory")
        ax.errorbar(w, res[f"{act}/alpha"] / w, yerr=res[f"{act}/alpha_std"] / w, fmt="o",
                    color=color, mfc="none", ms=7, capsize=2.5,
                    label=f"{act}: measured ({res['seeds']} networks)")
        dev = res[f"{act}/deviation"]
        if np.any(dev > 0):
            st = {k: res[f"{act}/deviation{sfx}"] for k, sfx in (("mean", ""), ("lo", "_lo"),
                                                                ("hi", "_hi"))}
            slope, ci = res[f"{act}/deviation_slope"], res[f"{act}/deviation_slope_ci95"]
            error_markers(ax2, w, st, "o", color=color, mfc="none",
                          label=act + (f": fit $M^{{{slope:.2f} \\pm {ci:.2f}}}$"
                                       if np.isfinite(ci) else ""))
            ax2.plot(w, res[f"{act}/deviation_prefactor"] * w ** slope, "-", color=color, lw=0.8)
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
