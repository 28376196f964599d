"""Unit-wise NGD at finite width: the one-step fall and the alpha mismatch against the damping and
the width, and where the undamped step's divergence comes from.

Data: digits 0 vs 1 with the authors' preprocessing (global standardization, unit-norm rows),
N = 40, 3 ReLU layers. The damping is a dual shift s = c x mean diag(Theta) added to every
per-unit N x N block Theta_{l,i} (parameter-space rho = s / N); c = 0 is the pseudo-inverse.
Columns:
  fall      L_1 / L_0 after one step at lr = 1/alpha_theory (alpha_theory = gamma sum M + 1);
            theory: 0
  alpha     trace(G) / N of the damped finite-width operator, relative to alpha_theory
  dev       ||G - alpha I||_F / ||alpha I||_F of that operator
  flips     fraction of (sample, hidden unit) pairs whose ReLU switches during the step
Per-unit diagnosis (undamped, widest network): units binned by the smallest eigenvalue
lambda_min of their block Theta_{l,i} = (d_i d_i^T) o Q_l on the samples where they are active
(d_i = df/du_{l,i}(X)); per bin the mean ||d_i||, the mean norm of the unit's weight update and
the fraction of its (sample) pre-activations that change sign. The pseudo-inverse makes the
update of unit i scale like lambda_min^{-1/2}: in the first layer lambda_min inherits the
ill-conditioning of the input Gram restricted to the active samples, in deeper layers small
derivatives d_i; those units take steps far outside the linear regime and switch their ReLUs.

    python experiments/unitwise_damping.py [--widths 256 1024 2048] [--n-train 40]
"""
from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import engine  # noqa: E402
from ntkngd.networks import empirical  # noqa: E402
from ntkngd.engine import apply_update  # noqa: E402
from ntkngd.methods import unitwise  # noqa: E402

RELATIVE = (0.0, 1e-10, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-2)
PER_UNIT = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


def active_pattern(K) -> list:
    """Per hidden layer: (N, M) booleans, unit active on sample (derivative non-zero)."""
    return [np.any(np.asarray(d).reshape(K.n_train, K.out_dim, -1) != 0, axis=1)
            for d in K.backprops_train[:-1]]


def one(net, params, ds, rel: float, per_unit: bool = False) -> dict:
    """rel: the dual shift as a fraction of mean diag(Theta), or (per_unit) of the mean
    per-unit block diagonal mean diag(Theta) / (number of units)."""
    K, f = empirical.kernels_and_outputs(net, params, ds.x_train)
    diag = float(np.mean(np.diag(np.asarray(K.ntk_train, float))))
    if per_unit:
        diag /= sum(np.shape(d)[-1] for d in K.backprops_train)
    rho = rel * diag / K.n_train
    alpha_th = unitwise.predicted_alpha(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = ng.operator("unit_wise", K, rho)
        d = ng.ngd_direction("unit_wise", net, params, ds.x_train, ds.y_train, damping=rho)
    p1 = apply_update(params, d, 1.0 / alpha_th)
    loss0 = float(ng.losses.mse.value(np.asarray(f), ds.y_train))
    K1, f1 = empirical.kernels_and_outputs(net, p1, ds.x_train)
    a = np.trace(op.train) / op.train.shape[0]
    dev = np.linalg.norm(op.train - a * np.eye(len(op.train))) / (a * np.sqrt(len(op.train)))
    flips = np.mean(np.concatenate([(x != y).ravel() for x, y in
                                    zip(active_pattern(K), active_pattern(K1))]))
    return {"rho": rho, "fall": float(ng.losses.mse.value(np.asarray(f1), ds.y_train) / loss0),
            "alpha": a / alpha_th, "dev": float(dev), "flips": float(flips)}


def _block_min_eig(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per unit: smallest eigenvalue of Theta_{l,i} = diag(d_i) Q diag(d_i) on its active samples."""
    out = np.full(d.shape[1], np.nan)
    for i in range(d.shape[1]):
        a = np.flatnonzero(d[:, i])
        if a.size:
            out[i] = np.linalg.eigvalsh(d[a, i][:, None] * q[np.ix_(a, a)] * d[a, i][None])[0]
    return out


def diagnose(net, params, ds, bins: int = 5) -> None:
    """Per-unit update norms and ReLU switches against the conditioning of the unit's block
    Theta_{l,i} (its smallest eigenvalue on the active samples) and its derivative size."""
    K, _ = empirical.kernels_and_outputs(net, params, ds.x_train)
    g = np.asarray(empirical.outputs(net, params, ds.x_train), float) - ds.y_train
    sig = [a[:, 0] for a in engine.signals("unit_wise", K, 0.0, g)]
    p1 = apply_update(params, ng.ngd_direction("unit_wise", net, params, ds.x_train, ds.y_train,
                                               damping=0.0), 1.0 / unitwise.predicted_alpha(net))
    K1, _ = empirical.kernels_and_outputs(net, p1, ds.x_train)
    act0, act1 = active_pattern(K), active_pattern(K1)
    s = np.linalg.svd(ds.x_train, compute_uv=False)
    print(f"\nundamped step, width {net.widths[0]}; input Gram X X^T condition number "
          f"{(s[0] / s[-1]) ** 2:.3g}. Units of each hidden layer binned by lambda_min, the "
          f"smallest eigenvalue of Theta_(l,i) on the unit's active samples (quantiles):")
    print(f"{'layer':>5} {'bin':>4} {'lambda_min range':>22} {'mean ||d_i||':>13} "
          f"{'active samples':>15} {'update norm':>12} {'switch frac':>12}")
    for l in range(K.depth - 1):
        q = np.asarray(K.fwd_train[l], float)
        dl = np.asarray(K.backprops_train[l], float)[:, 0]
        lam = _block_min_eig(q, dl)
        dcol = np.linalg.norm(dl, axis=0)
        upd = np.linalg.norm(np.asarray(K.layer_inputs_train[l], float)[:, 0].T @ sig[l], axis=0)
        on = np.isfinite(lam) & (lam > 0)
        edges = np.quantile(lam[on], np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, lam, side="right") - 1, 0, bins - 1)
        flips = (act0[l] != act1[l]).mean(0)
        for b in range(bins):
            sel = on & (which == b)
            print(f"{l + 1:>5} {b + 1:>4} {edges[b]:10.3g}-{edges[b + 1]:<10.3g} "
                  f"{dcol[sel].mean():13.3g} {act0[l][:, sel].sum(0).mean():15.1f} "
                  f"{upd[sel].mean():12.3g} {flips[sel].mean():12.3f}")
        slope, c = (np.polyfit(np.log(lam[on]), np.log(upd[on]), 1)[0],
                    np.corrcoef(np.log(lam[on]), np.log(upd[on]))[0, 1])
        print(f"      layer {l + 1}: log-log slope of the update norm on lambda_min = "
              f"{slope:.2f} (corr {c:.2f}); on ||d_i||: "
              f"{np.polyfit(np.log(dcol[on]), np.log(upd[on]), 1)[0]:.2f}")


def table(ds, widths, depth: int, grid, per_unit: bool) -> None:
    what = "s / (mean diag Theta / units)" if per_unit else "c = s / mean diag Theta"
    print(f"\n{'width':>6} {what:>30} {'rho':>10} {'fall L1/L0':>11} {'alpha/theory':>13} "
          f"{'dev':>9} {'flips':>7}")
    worst = {}
    for w in widths:
        net = ng.mlp(depth, w, "relu")
        params = net.init_fn(jax.random.PRNGKey(0), (-1, ds.input_dim))[1]
        for rel in grid:
            r = one(net, params, ds, rel, per_unit)
            worst[rel] = max(worst.get(rel, 0.0), r["fall"])
            print(f"{w:>6} {rel:30.0e} {r['rho']:10.2e} {r['fall']:11.3e} {r['alpha']:13.4f} "
                  f"{r['dev']:9.2e} {r['flips']:7.4f}")
    best = min(worst, key=worst.get)
    print(f"worst-case fall over widths: " + ", ".join(f"{k:g}: {v:.3g}" for k, v in worst.items())
          + f"  -> smallest at {best:g}")


def main(widths, n_train: int, depth: int, which: str) -> None:
    ds = ng.data.digits(n_train=n_train, n_test=100, classes=(0, 1))
    print(f"{ds.name}: N = {ds.n_train}, d = {ds.input_dim}, {ds.preprocessing}; L = {depth}")
    if which in ("all", "ntk"):
        table(ds, widths, depth, RELATIVE, per_unit=False)
    if which in ("all", "unit"):
        table(ds, widths, depth, PER_UNIT, per_unit=True)
    if which in ("all", "diagnose"):
        net = ng.mlp(depth, max(widths), "relu")
        diagnose(net, net.init_fn(jax.random.PRNGKey(0), (-1, ds.input_dim))[1], ds)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 2048])
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--table", default="all", choices=["all", "ntk", "unit", "diagnose"],
                    help="ntk: shift relative to mean diag(Theta); unit: relative to the mean "
                    "per-unit block diagonal; diagnose: the per-unit analysis")
    a = ap.parse_args()
    main(a.widths, a.n_train, a.depth, a.table)
