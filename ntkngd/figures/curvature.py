"""(m) Which curvature approximations are isotropic: the paper's methods (exact NGD, block
diagonal, block tri-diagonal, K-FAC, unit-wise) beside today's (diagonal Fisher, E-KFAC,
Shampoo) on finite ReLU networks of growing width (binary digits, N <= d so that K-FAC's first
factor is invertible). Left: deviation of the finite-width operator G from alpha I (Shampoo, which
has no fixed operator: the deviation of its linearized step J d from alpha_fit r at
initialization), median and min-max over seeds; the wide-limit values as lines where derived
(0 for the block patterns, K-FAC and unit-wise; the diagonal Fisher's Monte-Carlo limit; E-KFAC on
infinite-width kernels). Middle: alpha / width (Shampoo: alpha_fit / width) with the derived values
as lines (diagonal and E-KFAC: their trace identities). Right: training loss per step on the
quick profile's data at each method's lr (the finite-width operator's: 1/alpha when isotropic,
else 1/lambda_max; Shampoo: the best of a short sweep of lr x alpha_fit(0))."""
from __future__ import annotations

import numpy as np

from .. import analytic_kernels, mlp, operator
from ..networks.empirical import empirical_kernels
from .common import (COLORS, LABELS, MARKERS, Context, binary_data, data_record, floor_at,
                     init_params, legend, log_axis_at, quiet, save_figure, subplots)

NAME = "curvature"
TITLE = "which curvature approximations are isotropic"
METHODS = ("exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise", "diagonal",
           "ekfac", "shampoo")
FLOOR = 1e-16
# profile -> (N of the width sweep, widths, seeds, Monte-Carlo samples, Shampoo lr fractions)
SIZES = {"tiny": (8, (32, 64, 128), 2, 4000, (0.25, 1.0)),
         "quick": (16, (64, 128, 256, 512, 1024), 3, 40000, (0.0625, 0.125, 0.25, 0.5, 1.0)),
         "paper": (32, (128, 256, 512, 1024, 2048, 4096), 3, 100000,
                   (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0))}


def _sizes(ctx: Context):
    return SIZES.get(ctx.profile.name, SIZES["quick"])


def _shampoo_fit(net, params, x, y) -> dict:
    """alpha_fit and deviation of Shampoo's linearized step J d at initialization (MSE)."""
    import jax
    import jax.numpy as jnp

    from ..training.observers import isotropy_fit as ce_isotropy
    from ..engine import ngd_direction
    d = ngd_direction("shampoo", net, params, x, y, 0.0)
    xj = jnp.asarray(x)
    jd = np.asarray(jax.jvp(lambda p: net.apply_fn(p, xj), (params,), (d,))[1], np.float64)
    f = np.asarray(net.apply_fn(params, xj), np.float64)
    return ce_isotropy(jd, f, y, None, "mse")


def _width_point(ds, act: str, depth: int, w: int, seed: int) -> dict:
    net = mlp(depth, w, act)
    params = init_params(net, ds.input_dim, seed)
    K = empirical_kernels(net, params, ds.x_train)
    out = {}
    for m in METHODS:
        if m == "shampoo":
            fit = _shampoo_fit(net, params, ds.x_train, ds.y_train)
            out[f"{m}/alpha"], out[f"{m}/deviation"] = fit["alpha_fit"], fit["deviation"]
            continue
        op = quiet(operator, m, K, None)
        out[f"{m}/alpha"], out[f"{m}/deviation"] = op.alpha, op.deviation
    return out


def _limits(ds, depth: int, widths, samples: int) -> dict:
    """Wide-limit deviation and alpha lines: patterns / K-FAC / unit-wise from theory, the
    diagonal Fisher from `methods.diagonal.wide_limit` (with its Monte-Carlo error), E-KFAC from
    infinite-width kernels."""
    from ..methods import diagonal, patterns, unitwise
    n, d = ds.n_train, ds.input_dim
    net0 = mlp(depth, int(widths[0]), "relu")
    Ka = analytic_kernels(net0, ds.x_train)
    lim = diagonal.wide_limit(Ka, samples)
    out = {"ekfac/limit_deviation": quiet(operator, "ekfac", Ka, 0.0).deviation}
    dev, err, diag_alpha, uw = [], [], [], []
    for w in widths:
        net = mlp(depth, int(w), "relu")
        g, e = diagonal.combine(lim, diagonal.limit_counts(net, d))
        alpha = np.trace(g) / n
        dev.append(np.linalg.norm(g / alpha - np.eye(n)) / np.sqrt(n))
        err.append(e)
        diag_alpha.append(alpha)
        uw.append(unitwise.predicted_alpha(net))
    out.update({"diagonal/limit_deviation": np.asarray(dev), "diagonal/limit_mc_error":
                np.asarray(err), "diagonal/limit_alpha": np.asarray(diag_alpha),
                "unit_wise/limit_alpha": np.asarray(uw),
                "exact/limit_alpha": np.ones(len(widths)),
                "block_diagonal/limit_alpha": np.full(len(widths), float(depth)),
                "block_tridiagonal/limit_alpha": np.full(
                    len(widths), patterns.alpha(patterns.tridiagonal(depth).matrix)),
                "kfac/limit_alpha": np.full(len(widths), float(n * (depth - 1) + 1)),
                "ekfac/limit_alpha": np.full(len(widths), float((depth - 2) * n + min(n, d + 1)
                                                                + 1))})
    return out


def _train(ctx: Context, fractions) -> dict:
    """Training loss per step of every method on the profile's data and network (seed 0)."""
    import jax.numpy as jnp

    from .. import get_method, losses
    from ..training.observers import isotropy_fit as ce_isotropy, method_step
    from ..engine import train_step
    p = ctx.profile
    ds = binary_data(p)
    net = mlp(p.depth, p.width, "relu")
    params = init_params(net, ds.input_dim, 0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    K0 = empirical_kernels(net, params, ds.x_train)
    f0 = np.asarray(net.outputs(params, x), np.float64)
    out = {"train/n": ds.n_train, "train/width": p.width, "train/steps": np.arange(p.steps + 1)}

    def run(m: str, lr: float, rho) -> np.ndarray:
        meth, pp, loss = get_method(m), params, []
        for t in range(p.steps + 1):
            f = np.asarray(net.outputs(pp, x), np.float64)
            loss.append(0.5 * np.sum((f - ds.y_train) ** 2) / ds.n_train)
            if not np.isfinite(loss[-1]) or loss[-1] > 1e6:
                loss[-1] = np.inf
                break
            if t < p.steps:
                pp = train_step(meth, net, losses.mse, rho, pp, x, y, jnp.asarray(lr))[0]
        return np.asarray(loss + [np.inf] * (p.steps + 1 - len(loss)))

    for m in ctx.progress(METHODS, desc=f"{NAME} train"):
        def one(m=m):
            if m == "shampoo":
                a0 = ce_isotropy(method_step(m, K0, 0.0, f0, ds.y_train, "mse"), f0,
                                 ds.y_train, None, "mse")["alpha_fit"]
                runs = [run(m, fr / a0, 0.0) for fr in fractions]
                best = int(np.argmin([r[-1] for r in runs]))
                return {"loss": runs[best], "lr": fractions[best] / a0,
                        "sweep_final": np.asarray([r[-1] for r in runs])}
            op = quiet(operator, m, K0, None)
            return {"loss": run(m, op.lr, op.damping), "lr": op.lr}
        res = ctx.cache.get_or_compute(f"train_{m}_n{ds.n_train}_w{p.width}_s{p.steps}", one)
        for k, v in res.items():
            out[f"train/{m}/{k}"] = v
    out["train/preprocessing"] = data_record(ds)
    return out


def compute(ctx: Context) -> dict:
    n, widths, seeds, samples, fractions = _sizes(ctx)
    p = ctx.profile
    ds = binary_data(p, n_train=n)
    out = {"widths": np.asarray(widths), "seeds": seeds, "n": n, "preprocessing": data_record(ds)}
    rows = {}
    for w in ctx.progress(widths, desc=NAME):
        for s in range(seeds):
            res = ctx.cache.get_or_compute(
                f"w{w}_s{s}_n{n}", lambda w=int(w), s=s: _width_point(ds, "relu", p.depth, w, s))
            for k, v in res.items():
                rows.setdefault(k, []).append(float(v))
    for k, v in rows.items():
        out[k] = np.asarray(v).reshape(len(widths), seeds)
    out.update(ctx.cache.get_or_compute(f"limits_n{n}_{samples}",
                                        lambda: _limits(ds, p.depth, widths, samples)))
    out.update(_train(ctx, fractions))
    return out


DEV_FLOOR = 1e-3    # deviations that are exactly 0 (G = alpha I set exactly) are drawn here


def _band(ax, w, vals, m, scale=None, floor=FLOOR):
    v = np.asarray(vals, float) / (1.0 if scale is None else scale[:, None])
    med = np.median(v, axis=1)
    zero = bool(np.all(v == 0))
    ax.plot(w, floor_at(med, floor), marker=MARKERS[m], color=COLORS[m], mfc="none", ls="none",
            label=LABELS[m] + (" (= 0)" if zero else ""))
    ax.fill_between(w, floor_at(v.min(1), floor), floor_at(v.max(1), floor), color=COLORS[m],
                    alpha=0.2, lw=0)


def plot(res: dict, ctx: Context) -> list:
    fig, (ax, ax2, ax3) = subplots(3, width=4.8, height=4.0)
    w = res["widths"].astype(float)
    for m in METHODS:
        _band(ax, w, res[f"{m}/deviation"], m, floor=DEV_FLOOR)
        _band(ax2, w, res[f"{m}/alpha"], m, scale=w)
        if f"{m}/limit_alpha" in res:
            ax2.plot(w, res[f"{m}/limit_alpha"] / w, "-", color=COLORS[m], lw=1)
    ax.plot(w, res["diagonal/limit_deviation"], "-", color=COLORS["diagonal"], lw=1,
            label="diagonal: wide limit (MC)")
    ax.axhline(float(res["ekfac/limit_deviation"]), color=COLORS["ekfac"], lw=1, ls="-",
               label="E-KFAC: infinite width")
    for a in (ax, ax2):
        log_axis_at(a, res["widths"].tolist())
        a.set_yscale("log")
        a.set_xlabel("width M")
        a.grid(alpha=0.3, which="both")
    ax.set_ylabel(r"$\|G - \alpha I\|_F / \|\alpha I\|_F$  (0 drawn at $10^{-3}$)")
    ax.set_ylim(0.7 * DEV_FLOOR, 3.0)
    ax.set_title(f"deviation from isotropy (N = {int(res['n'])})")
    ax2.set_ylabel(r"$\alpha$ / M   (lines: derived)")
    ax2.set_title(r"$\alpha$ / width")
    legend(ax, loc="lower left", ncol=2)
    steps = res["train/steps"]
    for m in METHODS:
        ax3.plot(steps, floor_at(res[f"train/{m}/loss"], FLOOR), marker=MARKERS[m], ms=4,
                 color=COLORS[m], mfc="none", label=f"{LABELS[m]} (lr {float(res[f'train/{m}/lr']):.2g})")
    ax3.set_yscale("log")
    ax3.set_xlabel("step")
    ax3.set_ylabel("training loss (MSE)")
    ax3.set_title(f"training, N = {int(res['train/n'])}, width {int(res['train/width'])}")
    ax3.grid(alpha=0.3, which="both")
    ax3.legend(fontsize=6, frameon=False)
    return save_figure(fig, ctx, NAME)
