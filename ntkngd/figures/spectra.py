"""(d) Spectrum of each method's function-space operator, lr * G, beside GD's (the NTK's):
infinite-width operators (lines) and the finite network's empirical operators (markers)."""
from __future__ import annotations

import numpy as np

from .. import operator
from ..networks.empirical import empirical_kernels
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, legend, quiet, save_figure,
                     standard_setup, subplots)

NAME = "spectra"
TITLE = "spectra of the function-space operators"


def compute(ctx: Context) -> dict:
    out = {}

    def run():
        s = standard_setup(ctx.profile, seed=2)
        res = {}
        for m in METHOD_ORDER:
            sm = s.for_method(m)      # K-FAC: Forster inputs when N > d (the paper's setting)
            Ke = empirical_kernels(sm.net, sm.params, sm.ds.x_train)
            inf = quiet(operator, m, sm.kernels, 0.0)
            emp = quiet(operator, m, Ke, None)        # the method's default damping
            res[f"{m}/inf"] = inf.lr * inf.spectrum
            res[f"{m}/emp"] = inf.lr * emp.spectrum
            res[f"{m}/alpha_inf"] = inf.alpha
            res[f"{m}/alpha_emp"] = emp.alpha
        return res
    out.update(ctx.cache.get_or_compute("spectra", run))
    out["preprocessing"] = standard_setup(ctx.profile, seed=2).record()
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(2, width=5.2)
    for m in METHOD_ORDER:
        inf, emp = res[f"{m}/inf"], res[f"{m}/emp"]
        k = np.arange(1, len(inf) + 1)
        axes[0].plot(k, inf, "-", color=COLORS[m], lw=1.6, label=LABELS[m])
        axes[1].plot(k, emp, MARKERS[m], color=COLORS[m], ms=4, mfc="none", label=LABELS[m])
    for ax, title in zip(axes, ("infinite width (analytic)",
                                f"finite width {ctx.profile.width} (empirical)")):
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel(r"eigenvalues of $\eta^* G$ ($\eta^*$ = 1/alpha; GD: 1/$\lambda_{max}$)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    legend(axes[0], loc="lower left")
    fig.suptitle("infinite width: every NGD method flat (isotropic); finite width: unit-wise is "
                 "not (its damped per-unit blocks fluctuate); GD inherits the NTK's decay",
                 fontsize=10)
    return save_figure(fig, ctx, NAME)
