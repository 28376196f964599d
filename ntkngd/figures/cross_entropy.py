"""(i) Cross-entropy: loss and accuracy against step on digits (ctx.profile.ce_classes classes,
ce_n_train points), infinite-width function-space theory (lines: `ce_predict` discrete map from the
network's own initial outputs, same lr) against the finite network trained in parameter space
(markers, `ntkngd.train(..., loss="ce")`). NGD-type methods use lr = 0.5 / alpha (half the
function-space Newton step) with alpha the derived cross-entropy constant (docs/theory.md §5:
K-FAC r + N (L - 2) + 1, unit-wise gamma sum M / (C - 1) + 1), so their training curves coincide
in theory; GD uses N / lambda_max(Theta). K-FAC and unit-wise have no CE theory: their dashed
lines are the block-pattern flow at that alpha, training set only, and the legend gives the fitted
alpha and the relative deviation of their first linearized step from alpha_fit Hs^+ r. Digits for
the quick profile, MNIST (classes 0..C-1, the bundled test split) for the paper profile."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from .. import analytic_kernels, mlp
from .. import data as data_mod
from ..compat import train_ce
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, Context, data_record, init_params, legend, quiet,
                     save_figure, subplots)

NAME = "cross_entropy"
TITLE = "cross-entropy loss and accuracy against step, theory against finite-width training"
APPROX = ("kfac", "unit_wise")
FIELDS = ("train_loss", "test_loss", "train_acc", "test_acc", "pred_inf_train_loss",
          "pred_inf_test_loss", "pred_inf_train_acc", "pred_inf_test_acc", "pred_emp_train_loss",
          "pred_emp_test_loss", "alpha_fit", "deviation")


def _dataset(p):
    classes = tuple(range(p.ce_classes))
    if p.mnist:
        return data_mod.load_mnist(p.data_dir, n_train=p.ce_n_train, n_test=p.n_test,
                                   classes=classes, binary=False, seed=0)
    return data_mod.digits(n_train=p.ce_n_train, n_test=p.n_test, classes=classes, binary=False,
                           seed=0)


def compute(ctx: Context) -> dict:
    p = ctx.profile
    ds = _dataset(p)
    net = mlp(p.depth, p.width, "relu", out_dim=p.ce_classes)
    params = init_params(net, ds.input_dim, seed=0)
    data = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    kernels = {}

    def analytic():
        if "K" not in kernels:
            kernels["K"] = analytic_kernels(net, ds.x_train, ds.x_test)
        return kernels["K"]

    out = {"steps": np.arange(p.steps + 1), "preprocessing": data_record(ds)}
    for m in ctx.progress(METHOD_ORDER, desc=NAME):
        def run(m=m):
            log = quiet(train_ce, m, net, params, data, steps=p.steps, analytic=analytic())
            res = {k: np.asarray(getattr(log, k), float) for k in FIELDS}
            res.update(lr=log.lr, damping=log.damping,
                       alpha=np.nan if log.alpha is None else log.alpha,
                       pred_alpha=np.nan if log.pred_alpha is None else log.pred_alpha)
            return res
        for k, v in ctx.cache.get_or_compute(m, run).items():
            out[f"{m}/{k}"] = v
    return out


def _label(res, m):
    if m in APPROX:
        return (f"{LABELS[m]} (alpha_fit {res[f'{m}/alpha_fit'][0]:.3g}, "
                f"dev {res[f'{m}/deviation'][0]:.2g})")
    return LABELS[m]


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(2, 2, width=5.0, height=3.6)
    t = res["steps"]
    panels = (("train_loss", "training cross-entropy", True),
              ("test_loss", "test cross-entropy", True),
              ("train_acc", "training accuracy", False),
              ("test_acc", "test accuracy", False))
    for ax, (key, ylabel, log_y) in zip(axes, panels):
        for m in METHOD_ORDER:
            theory = np.asarray(res[f"{m}/pred_inf_{key}"], float)
            if np.all(np.isfinite(theory)):
                ax.plot(t, theory, "--" if m in APPROX else "-", color=COLORS[m], lw=1.3,
                        alpha=0.9)
            ax.plot(t, res[f"{m}/{key}"], MARKERS[m], color=COLORS[m], ms=6, mfc="none",
                    label=_label(res, m))
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "-", color="k", label="theory (infinite width)")
    axes[0].plot([], [], "--", color="k", label="alpha_fit x block-pattern flow")
    legend(axes[0], loc="lower left", ncol=1)
    p = ctx.profile
    fig.suptitle(f"Cross-entropy, {'MNIST' if p.mnist else 'digits'} {p.ce_classes} classes, "
                 f"N = {p.ce_n_train}, width "
                 f"{p.width}, lr = 0.5/alpha (GD: N/lambda_max). Lines: theory; markers: "
                 f"finite-width training.\nK-FAC / unit-wise: no CE theory (dashed: exact-NGD "
                 f"flow at their derived alpha, training set only; test panels markers only)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, ctx, NAME)
