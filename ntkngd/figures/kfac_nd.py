"""(g) K-FAC's deviation from isotropy against N/d, with and without the Forster transform."""
from __future__ import annotations

import warnings

import numpy as np

from .. import analytic_kernels, data, mlp, operator
from .common import Context, legend, log_axis_at, save_figure, subplots

NAME = "kfac_nd"
TITLE = "K-FAC deviation from isotropy against N/d"


def compute(ctx: Context) -> dict:
    p = ctx.profile
    d = p.kfac_dim
    ns = np.unique(np.round(np.geomspace(max(2, d // 4), 4 * d, p.kfac_points)).astype(int))
    net = mlp(p.depth, p.width, "relu")

    def one(n):
        def run():
            x = data.sphere(int(n), 1, d, seed=int(n)).x_train
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = operator("kfac", analytic_kernels(net, x))
                out = {"raw": raw.deviation, "alpha_raw": raw.alpha,
                       "forster": np.nan, "alpha_forster": np.nan}
                if n >= d:
                    fo = operator("kfac", analytic_kernels(net, data.forster_transform(x)))
                    out.update(forster=fo.deviation, alpha_forster=fo.alpha)
            return out
        return ctx.cache.get_or_compute(f"n{n}", run)

    rows = [one(n) for n in ctx.progress(ns, desc=NAME)]
    prep = {"data": f"sphere(dim={d})", "preprocessing": "uniform on the unit sphere; 'forster' "
            "columns: Forster's transform of the same points (only where N >= d)"}
    return {"n": ns, "d": d, "preprocessing": prep,
            **{k: np.array([r[k] for r in rows]) for k in rows[0]}}


def _ratio_axis(ax, ratio) -> None:
    """Log x-axis of N/d with plain tick labels at powers of two."""
    log_axis_at(ax, [2.0 ** k for k in range(-4, 5)
                     if ratio.min() / 1.01 <= 2.0 ** k <= ratio.max() * 1.01])


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2) = subplots(2, width=4.8)
    ratio = res["n"] / float(res["d"])
    floor = 1e-16
    ax.semilogy(ratio, np.maximum(res["raw"], floor), "o-", color="tab:green", label="raw inputs")
    ax.semilogy(ratio, np.maximum(res["forster"], floor), "s--", color="tab:purple",
                label="Forster transform")
    ax.axvline(1.0, color="0.6", lw=1, ls=":")
    _ratio_axis(ax, ratio)
    ax.set_xlabel("N / d")
    ax.set_ylabel(r"$\|G - \alpha I\|_F / \|\alpha I\|_F$")
    ax.set_title(f"K-FAC isotropy (d = {int(res['d'])}, L = {ctx.profile.depth})")
    legend(ax)
    ax.grid(alpha=0.3)
    n = res["n"].astype(float)
    L, d = ctx.profile.depth, float(res["d"])
    ax2.plot(ratio, res["alpha_raw"], "o", color="tab:green", label="measured, raw")
    ax2.plot(ratio, res["alpha_forster"], "s", mfc="none", color="tab:purple", label="measured, Forster")
    ax2.plot(ratio, n * (L - 1) + 1, "-", color="k", lw=1, label=r"$N(L-1)+1$ (N $\leq$ d)")
    ax2.plot(ratio, np.minimum(n, d) + n * (L - 2) + 1, "--", color="0.4", lw=1,
             label=r"$\min(N,d) + N(L-2) + 1$")
    ax2.set_yscale("log")
    _ratio_axis(ax2, ratio)
    ax2.set_xlabel("N / d")
    ax2.set_ylabel(r"measured $\alpha$ = tr G / N")
    legend(ax2)
    ax2.grid(alpha=0.3)
    return save_figure(fig, ctx, NAME)
