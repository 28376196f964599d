"""(f) Block tri-diagonal alpha against depth, including the depths where the pattern is singular."""
from __future__ import annotations

import warnings

import numpy as np

from .. import analytic_kernels, mlp, operator
from ..methods import patterns
from .common import Context, binary_data, data_record, legend, save_figure, subplots

NAME = "btd_depth"
TITLE = "block tri-diagonal alpha against depth"


def compute(ctx: Context) -> dict:
    p = ctx.profile
    ds = binary_data(p)
    depths = np.arange(1, p.max_depth + 1)

    def one(L):
        def run():
            K = analytic_kernels(mlp(int(L), p.width, "relu"), ds.x_train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                op = operator("block_tridiagonal", K)
                damped = operator("block_tridiagonal", K, damping=1e-6)
            T = patterns.tridiagonal(int(L)).matrix
            return {"alpha": op.alpha, "deviation": op.deviation, "alpha_damped": damped.alpha,
                    "theory": patterns.alpha(T),
                    "singular": abs(np.linalg.det(T)) < 1e-9}
        return ctx.cache.get_or_compute(f"L{L}", run)

    rows = [one(L) for L in ctx.progress(depths, desc=NAME)]
    return {"depth": depths, "preprocessing": data_record(ds),
            **{k: np.array([r[k] for r in rows]) for k in rows[0]}}


def plot(res: dict, ctx: Context) -> list:
    fig, (ax,) = subplots(width=5.5)
    L = res["depth"]
    ax.plot(L, res["theory"], "-", color="tab:orange", lw=2, label=r"theory $1^\top T^+ 1$")
    ax.plot(L, res["alpha"], "o", color="k", ms=6, label=r"measured, $\rho \to 0$ limit")
    ax.plot(L, res["alpha_damped"], "x", color="tab:blue", ms=7, label=r"measured, $\rho = 10^{-6}$")
    sing = res["singular"].astype(bool)
    ax.plot(L[sing], res["alpha"][sing], "o", mfc="none", mec="tab:red", ms=13, mew=1.5,
            label="T singular (L = 2 mod 3)")
    ax.set_xlabel("depth L (trainable layers)")
    ax.set_ylabel(r"$\alpha$ (G = $\alpha$ I)")
    ax.set_title("Block tri-diagonal NGD: isotropic constant")
    legend(ax)
    ax.grid(alpha=0.3)
    return save_figure(fig, ctx, NAME)
