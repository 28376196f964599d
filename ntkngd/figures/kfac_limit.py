"""(k) K-FAC's finite-width limit: one step at lr = 1/alpha on digits 0 vs 1 (N <= d, authors'
preprocessing) whose input Gram's condition number kappa is controlled by mixing the raw inputs
with their ZCA-whitened version, x(mix) = unit_norm((1 - mix) x_raw + mix x_zca). Measured: the
one-step training-loss fall L_1 / L_0 (theory: 0 for K-FAC and exact NGD alike, since G = alpha I
holds for any full-rank input Gram) and the test-output gap to the infinite-width theory
||f'_1 - f'_1(theory)|| / ||f_0 - y||, for K-FAC and exact NGD (control) at several widths, and for
K-FAC with factored damping rho (lam = sqrt(rho) on each factor) at the raw inputs.

N is the profile's, capped at MAX_N = 48: the digits 0 vs 1 span only 49-51 of the 64 pixel
dimensions (constant border pixels), so for larger N (the paper profile's 100) the input Gram is
singular, kappa is infinite and K-FAC's theory is not isotropic; the premise of the figure fails."""
from __future__ import annotations

import numpy as np

from .. import mlp
from .. import data as data_mod
from ..dynamics.trajectory import mse
from .common import (Context, data_record, error_markers, init_params, legend, one_step,
                     power_fit, save_figure, seed_stats, subplots)

NAME = "kfac_limit"
TITLE = "K-FAC one-step fall and test gap against the input Gram's condition number"
MIXES = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
DAMPINGS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
WIDTHS = {"tiny": (64, 256)}
METHODS = ("kfac", "exact")
MAX_N = 48


def widths(p) -> tuple:
    return WIDTHS.get(p.name, tuple(sorted({max(64, p.width // 4), p.width, 4096})))


def _zca(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits 0 vs 1 ZCA-whitened (statistics of every non-test image, non-degenerate
    components), then the authors' global standardization and unit norm."""
    from sklearn.datasets import load_digits
    raw = load_digits()
    x, lab = data_mod.select_classes(raw.images, raw.target, (0, 1))
    perm = np.random.default_rng(0).permutation(len(lab))     # the split of data.digits(seed=0)
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    x = data_mod.flatten(x)
    pool = x[np.setdiff1d(np.arange(len(lab)), te)]
    mu = pool.mean(0)
    _, s, vt = np.linalg.svd(pool - mu, full_matrices=False)
    keep = s > 1e-8 * s[0]
    zca = (x - mu) @ (vt[keep].T / s[keep]) @ vt[keep] * np.sqrt(len(pool))
    a, b, _ = data_mod.preprocess(zca[tr], zca[te])
    return a, b


def n_train(p) -> int:
    """Training points of the figure: the profile's N, at most MAX_N (invertible input Gram)."""
    return min(p.n_train, MAX_N)


def mixed(p, mix: float) -> tuple[data_mod.Dataset, float]:
    """(dataset with inputs unit_norm((1 - mix) raw + mix zca), condition number of X X^T)."""
    import dataclasses
    n = n_train(p)
    ds = data_mod.digits(n_train=n, n_test=p.n_test, classes=(0, 1), seed=0)
    ztr, zte = _zca(n, p.n_test)
    xtr = data_mod.unit_norm_rows((1 - mix) * ds.x_train + mix * ztr)
    xte = data_mod.unit_norm_rows((1 - mix) * ds.x_test + mix * zte)
    s = np.linalg.svd(xtr, compute_uv=False)
    ds = dataclasses.replace(ds, x_train=xtr, x_test=xte,
                             preprocessing=ds.preprocessing + f" (mixed with its ZCA-whitened "
                             f"version, weight {mix:g}, then unit-norm rows)")
    return ds, float((s[0] / s[-1]) ** 2)


def _one(p, ds, method: str, width: int, damping: float, seed: int) -> dict:
    net = mlp(p.depth, width, "relu")
    r = one_step(net, init_params(net, ds.input_dim, 700 + seed), ds, method, damping)
    op, g = r["op"], r["g"]
    theory_t = r["f0t"] - op.lr * op.test @ g
    return {"fall": mse(r["f1"], ds.y_train) / mse(r["f0"], ds.y_train),
            "test_gap": float(np.linalg.norm(r["f1t"] - theory_t) / np.linalg.norm(g)),
            "test_loss": mse(r["f1t"], ds.y_test), "theory_test_loss": mse(theory_t, ds.y_test)}


def _seeds(rows: list) -> dict:
    """Every seed's value of each quantity (arrays over seeds)."""
    return {k: np.array([r[k] for r in rows], float) for k in rows[0]}


def _store(out: dict, prefix: str, r: dict) -> None:
    """Append the geometric mean and spread over seeds of each quantity (`seed_stats`)."""
    for k, v in r.items():
        st = seed_stats(v)
        for sfx, key in (("", "mean"), ("_lo", "lo"), ("_hi", "hi")):
            out.setdefault(f"{prefix}/{k}{sfx}", []).append(float(st[key]))
        out.setdefault(f"{prefix}/{k}_seeds", []).append(np.asarray(v, float))


def compute(ctx: Context) -> dict:
    p = ctx.profile
    if p.data_dir:
        raise ValueError("the K-FAC limit figure uses the bundled digits; run it without "
                         "--data-dir")
    ws = widths(p)
    out = {"mix": np.array(MIXES), "widths": np.array(ws), "dampings": np.array(DAMPINGS),
           "n_train": n_train(p), "kappa": [], "preprocessing": {}}
    sets = {}
    for mix in MIXES:
        ds, kappa = mixed(p, mix)
        sets[mix] = ds
        out["kappa"].append(kappa)
        out["preprocessing"][f"{mix:g}"] = data_record(ds)
    jobs = [(m, w, mix) for m in METHODS for w in ws for mix in MIXES]
    for m, w, mix in ctx.progress(jobs, desc=NAME):
        r = ctx.cache.get_or_compute(f"{m}_w{w}_mix{mix:g}_s{p.seeds}",
                                     lambda m=m, w=w, mix=mix: _seeds(
            [_one(p, sets[mix], m, int(w), 0.0, s) for s in range(p.seeds)]))
        _store(out, f"{m}/w{w}", r)
    for w in ws:
        for rho in DAMPINGS:
            r = ctx.cache.get_or_compute(f"kfac_w{w}_rho{rho:g}_s{p.seeds}",
                                         lambda w=w, rho=rho: _seeds(
                [_one(p, sets[0.0], "kfac", int(w), rho, s) for s in range(p.seeds)]))
            _store(out, f"kfac_damped/w{w}", r)
    out["seeds"] = p.seeds
    for m in METHODS:        # the kept loss at the raw inputs against width: c M^slope
        for key in ("fall", "test_gap"):
            fit = power_fit(ws, np.array([out[f"{m}/w{w}/{key}_seeds"][0] for w in ws]))
            out[f"{m}/raw_{key}_slope"] = fit["slope"]
            out[f"{m}/raw_{key}_slope_ci95"] = fit["ci95"]
    for k in [k for k in out if k.endswith("_seeds")]:
        out[k] = np.array(out[k])
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(3, width=4.6, height=3.9)
    kappa = np.asarray(res["kappa"])
    ws = res["widths"]
    shades = np.linspace(0.35, 1.0, len(ws))
    for ax, key, ylabel in ((axes[0], "fall", r"$L_1 / L_0$ (theory: 0)"),
                            (axes[1], "test_gap", r"$\|f'_1 - f'^{theory}_1\| / \|f_0 - y\|$")):
        for w, sh in zip(ws, shades):
            for m, fmt, color, name in (("kfac", "D-", (0.1, 0.5 * sh + 0.2, 0.1), "K-FAC"),
                                        ("exact", "o--", str(0.7 - 0.5 * sh), "exact NGD")):
                st = {k: np.asarray(res[f"{m}/w{w}/{key}{sfx}"])
                      for k, sfx in (("mean", ""), ("lo", "_lo"), ("hi", "_hi"))}
                error_markers(ax, kappa, st, fmt, color=color, mfc="none",
                              label=f"{name}, width {w}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"condition number $\kappa$ of the input Gram $X X^\top$")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"one step at lr = 1/alpha (N = {res['n_train']}; {res['seeds']} networks; "
                      f"raw K-FAC ~ M^{res['kfac/raw_fall_slope']:.2f}"
                      f"+-{res['kfac/raw_fall_slope_ci95']:.2f})", fontsize=8)
    axes[1].set_title("test outputs after one step vs theory", fontsize=9)
    legend(axes[0], loc="upper left")
    rho = np.asarray(res["dampings"])
    for w, sh in zip(ws, shades):
        axes[2].plot(rho, res[f"kfac_damped/w{w}/fall"], "D-", color=(0.1, 0.5 * sh + 0.2, 0.1),
                     mfc="none", label=f"$L_1/L_0$, width {w}")
        axes[2].plot(rho, res[f"kfac_damped/w{w}/test_gap"], "s:", color=(0.1, 0.5 * sh + 0.2, 0.1),
                     mfc="none", label=f"test gap, width {w}")
        axes[2].axhline(res[f"kfac/w{w}/fall"][0], color=(0.1, 0.5 * sh + 0.2, 0.1), lw=0.8,
                        ls="--", label=r"$L_1/L_0$ undamped" if w == ws[-1] else None)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel(r"K-FAC damping $\rho$ ($\sqrt{\rho}$ on each factor)")
    axes[2].set_title(f"K-FAC on the raw inputs ($\\kappa$ = {kappa[0]:.2g}) with damping",
                      fontsize=9)
    axes[2].grid(alpha=0.3, which="both")
    legend(axes[2], loc="best")
    return save_figure(fig, ctx, NAME)
