"""(b) One-step training loss against lr / lr_opt: in theory every isotropic method falls on the
single curve (1 - lr/lr_opt)^2 (line); markers are finite-width networks. The first lr at which a
finite network leaves that curve by more than DEPART_TOL of the initial loss is recorded per
method ("departure") and drawn as a filled marker: beyond it the step leaves the linear regime."""
from __future__ import annotations

import numpy as np

from .. import operator, predict
from ..dynamics.trajectory import mse
from ..networks.empirical import empirical_kernels, outputs
from ..engine import ngd_direction
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, legend, quiet, save_figure,
                     standard_setup, step_params, subplots)

NAME = "lr_sweep"
DEPART_TOL = 0.05     # |L_1 / L_0 - (1 - s)^2| above which a method has left the isotropic curve
TITLE = "one-step loss against lr / lr_opt"


def compute(ctx: Context) -> dict:
    p = ctx.profile
    s = standard_setup(p, seed=1)
    fr = np.asarray(p.lr_fractions, float)
    out = {"fractions": fr, "preprocessing": s.record()}
    for m in ctx.progress(METHOD_ORDER, desc=NAME):
        sm = s.for_method(m)          # K-FAC: Forster inputs when N > d (the paper's setting)
        ds, net, params, Ka = sm.ds, sm.net, sm.params, sm.kernels

        def run(m=m, ds=ds, net=net, params=params, Ka=Ka, damping=None):
            f0 = np.asarray(outputs(net, params, ds.x_train))
            loss0 = mse(f0, ds.y_train)
            op_inf = quiet(operator, m, Ka, 0.0)
            lr_opt = op_inf.lr
            d = quiet(ngd_direction, m, net, params, ds.x_train, ds.y_train, damping=damping)
            measured = [mse(np.asarray(outputs(net, step_params(params, d, s * lr_opt), ds.x_train)),
                            ds.y_train) / loss0 for s in fr]
            theory = [predict(op_inf, f0, ds.y_train, lr=s * lr_opt, steps=1).train_loss[1] / loss0
                      for s in fr]
            op_emp = quiet(operator, m, empirical_kernels(net, params, ds.x_train), damping)
            return {"lr_opt": lr_opt, "measured": measured, "theory": theory, "loss0": loss0,
                    "alpha_emp": op_emp.alpha, "alpha_inf": op_inf.alpha,
                    "departure": departure(fr, measured)}
        for k, v in ctx.cache.get_or_compute(m, run).items():
            out[f"{m}/{k}"] = v
    return out


def departure(fractions, measured) -> float:
    """First lr / lr_opt where the measured one-step ratio differs from (1 - s)^2 by more than
    DEPART_TOL (NaN if it never does)."""
    fr = np.asarray(fractions, float)
    off = np.abs(np.asarray(measured, float) - (1 - fr) ** 2) > DEPART_TOL
    return float(fr[np.argmax(off)]) if off.any() else float("nan")


def plot(res: dict, ctx: Context) -> list:
    fig, (ax,) = subplots(width=6.0, height=4.4)
    fine = np.linspace(0, max(res["fractions"]) * 1.05, 200)
    ax.plot(fine, (1 - fine) ** 2, "-", color="k", lw=1.5,
            label=r"isotropic theory $(1 - \eta/\eta^*)^2$")
    for m in METHOD_ORDER:
        if m == "gd":
            ax.plot(res["fractions"], res[f"{m}/theory"], "--", color=COLORS[m], lw=1)
        dep = res[f"{m}/departure"]
        leaves = "" if m == "gd" else (f", leaves at {dep:g}" if np.isfinite(dep) else ", stays")
        ax.plot(res["fractions"], res[f"{m}/measured"], MARKERS[m], color=COLORS[m], ms=7,
                mfc="none", label=f"{LABELS[m]}{leaves}")
        if m != "gd" and np.isfinite(dep):
            i = int(np.flatnonzero(np.isclose(res["fractions"], dep))[0])
            ax.plot([dep], [res[f"{m}/measured"][i]], MARKERS[m], color=COLORS[m], ms=8)
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 2)
    ax.set_xlabel(r"$\eta / \eta^*$   ($\eta^* = 1/\alpha$; GD: $1/\lambda_{max}$)")
    ax.set_ylabel("loss after one step / initial loss")
    ax.set_title(f"One step of each method, width {ctx.profile.width}, against the isotropic "
                 f"curve\n(filled: first lr where the network leaves it by > {DEPART_TOL:g} L0)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.plot([], [], "--", color=COLORS["gd"], label="GD theory")
    legend(ax, loc="lower left")
    return save_figure(fig, ctx, NAME)
