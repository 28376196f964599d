"""(j) Generalization at the fixed points: test loss and test accuracy of every method on digits
0 vs 1 prepared three ways (the authors' raw pipeline, PCA-whitened, Forster for every method)
against N/d. Lines: infinite-width theory at t -> infinity (the limit of the continuous-time flow
from the networks' own initial outputs: `ntkngd.predict(op, ..., times=[np.inf])`; no limit where
G has a growing mode, `Operator.slowest_rate` <= 0, recorded as infinite loss); markers: finite networks trained in parameter space
(NGD methods `steps` steps at lr = 1/alpha; GD by full-batch gradient steps with Polyak momentum
tuned to the extreme eigenvalues of the NTK, which reaches GD's fixed point -- the same point for
any method whose steps stay in the span of the gradients, exactly so for the linearized network --
in `GD_STEPS` steps instead of ~ lambda_max / lambda_min), at the profile's N and at one N > d.
The theory says the methods train alike and differ only in their test functions
f' = f'_0 - G' G^+ (f_0 - y); exact NGD and GD share one (G' G^-1 = Theta' Theta^-1)."""
from __future__ import annotations

import functools

import numpy as np

from .. import analytic_kernels, mlp, operator, predict
from ..dynamics.trajectory import mse
from ..networks.empirical import outputs
from ..engine import ngd_direction
from ..training.observers import accuracy
from ..linalg import serial_blas
from .common import (COLORS, LABELS, MARKERS, METHOD_ORDER, FORSTER_ITERS, Context, binary_data,
                     data_record, init_params, log_axis_at, quiet, save_figure, step_params,
                     subplots)

NAME = "generalization"
TITLE = "test loss and accuracy at the fixed points, raw / whitened / Forster inputs, against N/d"
PREPS = ("raw", "whitened", "forster")
PREP_LABELS = {"raw": "raw (global standardization + unit norm)",
               "whitened": "PCA-whitened", "forster": "Forster (every method)"}
GD_STEPS = {"tiny": 100}
GD_STEPS_DEFAULT = 300
# Eigenvalues below RANK_CUT x the largest count as null: the float64 cut of the library's
# t -> infinity limit (Operator.schur: 100 x linalg.rank_rtol), here for the NTK's spectrum.
RANK_CUT = 1e-8
SWEEP = {"tiny": (0.25, 0.75, 1.5)}            # N / 64 of the theory sweep
SWEEP_DEFAULT = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
CLIP = 10.0           # test losses above CLIP (Forster's near-singular inputs) drawn at CLIP
NGD_STEPS = 4         # NGD steps of the finite networks (theory: one step converges)
SEEDS = 2             # networks (initial outputs f_0) averaged per point


def _data(p, n: int, prep: str):
    """(dataset, note) or (None, reason) when the preparation does not exist at this N."""
    from .. import data as data_mod
    ds = binary_data(p.replace(data="digits"), n_train=n, whiten=prep == "whitened")
    if prep != "forster":
        return ds, ""
    if ds.n_train <= ds.input_dim:
        return None, "Forster needs N > d"
    return quiet(data_mod.forster_dataset, ds, iters=FORSTER_ITERS, span=True), ""


@functools.lru_cache(maxsize=2)
def _params(depth: int, width: int, input_dim: int, seed: int, dtype: str):
    """The initial parameters of seed `seed`, drawn once and shared by every configuration and
    method (at width 4096 drawing and checking them cost more than the theory itself)."""
    del dtype                           # part of the key: jax's default float width
    return init_params(mlp(depth, width, "relu"), input_dim, seed)


def _seed_params(p, input_dim: int, seed: int):
    import jax.numpy as jnp
    return _params(p.depth, p.width, input_dim, seed, jnp.zeros(()).dtype.name)


def _initial_outputs(p, ds, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(f_0 on the training inputs, f_0 on the test inputs) of the network of seed 500 + seed."""
    net = mlp(p.depth, p.width, "relu")
    params = _seed_params(p, ds.input_dim, 500 + seed)
    return (np.asarray(outputs(net, params, ds.x_train), float),
            np.asarray(outputs(net, params, ds.x_test), float))


# methods whose t -> infinity theory the sharded backend computes (ntkngd.sharded.operators)
SHARDED_METHODS = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac")
USES_DEVICES = True      # `ntkngd figures --devices K`: the theory on a K-device mesh


def _operators(p, ds, mesh) -> dict:
    """method -> (operator at damping 0, backend): "sharded" on the mesh's row-sharded kernels
    for SHARDED_METHODS when `mesh` is given and the backend applies (positive-definite blocks;
    otherwise it raises NotImplementedError and the method falls back), else "dense"."""
    net = mlp(p.depth, p.width, "relu")
    dense = functools.lru_cache(maxsize=1)(lambda: analytic_kernels(net, ds.x_train, ds.x_test))
    sharded = functools.lru_cache(maxsize=1)(
        lambda: analytic_kernels(net, ds.x_train, ds.x_test, mesh=mesh))
    ops = {}
    for m in METHOD_ORDER:
        if m == "unit_wise":           # no infinite-width test operator
            continue
        if mesh is not None and m in SHARDED_METHODS:
            try:
                op = quiet(operator, m, sharded(), 0.0)
                ops[m] = (op, "sharded", op.slowest_rate)
                continue
            except NotImplementedError:
                pass
        op = quiet(operator, m, dense(), 0.0)
        ops[m] = (op, "dense", op.slowest_rate)
    return ops


@serial_blas()
def _theory(p, ds, seeds: int, devices=None) -> dict:
    """Every method's test loss, accuracy and training loss at t -> infinity, mean over `seeds`
    initial outputs, with G's deviation from isotropy and slowest rate (`slowest_rate` <= 0: no
    limit, recorded as infinite loss). devices: a device count, the theory of SHARDED_METHODS on
    a one-axis mesh of that many devices (`<m>/backend` records which path computed each)."""
    mesh = None
    if devices is not None:
        from ..sharded import make_mesh
        mesh = make_mesh(int(devices))
    starts = [_initial_outputs(p, ds, s) for s in range(seeds)]     # shared by the methods
    res = {}
    for m, (op, backend, lowest) in _operators(p, ds, mesh).items():
        rows = []
        for f0, f0t in starts if lowest > 0 else ():        # lowest <= 0: no limit (diverges)
            traj = predict(op, f0, ds.y_train, f0t, lr=1.0, times=[np.inf])
            ftr, fte = traj.train[-1], traj.test[-1]
            rows.append((mse(fte, ds.y_test), accuracy(fte, ds.y_test), mse(ftr, ds.y_train)))
        r = np.mean(rows, axis=0) if lowest > 0 else (np.inf, np.nan, np.inf)
        res.update({f"{m}/test_loss": r[0], f"{m}/test_acc": r[1], f"{m}/train_loss": r[2],
                    f"{m}/deviation": op.deviation, f"{m}/lowest_eig": lowest})
        if mesh is not None:
            res[f"{m}/backend"] = backend
    return res


def _gd_train(net, params, x, y, lam_max: float, lam_min: float, steps: int):
    """`steps` full-batch gradient steps with Polyak momentum on 1/(2N) sum ||f - y||^2 (jitted
    loop): lr = 4 / (sqrt(lam_max) + sqrt(lam_min))^2, beta = ((sqrt k - 1) / (sqrt k + 1))^2,
    k = lam_max / lam_min, the optimal heavy ball for a quadratic with that spectrum."""
    import jax
    import jax.numpy as jnp
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    lr = 4.0 / (np.sqrt(lam_max) + np.sqrt(lam_min)) ** 2
    root = np.sqrt(lam_max / lam_min)
    beta = ((root - 1) / (root + 1)) ** 2

    def loss(p):
        return 0.5 * jnp.sum((net.apply_fn(p, xj) - yj) ** 2) / xj.shape[0]

    grad = jax.grad(loss)

    def body(_, state):
        p, prev = state
        new = jax.tree_util.tree_map(lambda a, b, c: a - lr * b + beta * (a - c), p, grad(p), prev)
        return new, p
    return jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, p))[0])(params)


@serial_blas()
def _finite(p, ds, m: str, seed: int) -> dict:
    net = mlp(p.depth, p.width, "relu")
    params = _seed_params(p, ds.input_dim, 500 + seed)
    K = analytic_kernels(net, ds.x_train)
    op = quiet(operator, m, K, 0.0)
    lr = op.lr
    if m == "gd":
        ev = op.spectrum
        ev = ev[ev > ev.max() * RANK_CUT]
        params = _gd_train(net, params, ds.x_train, ds.y_train, ev.max(), ev.min(),
                           GD_STEPS.get(p.name, GD_STEPS_DEFAULT))
    else:
        if m == "unit_wise":
            from ..methods.unitwise import predicted_alpha
            lr = 1.0 / predicted_alpha(net)
        for _ in range(NGD_STEPS):
            d = quiet(ngd_direction, m, net, params, ds.x_train, ds.y_train, damping=None)
            params = step_params(params, d, lr)
    f = np.asarray(outputs(net, params, ds.x_train), float)
    ft = np.asarray(outputs(net, params, ds.x_test), float)
    return {"test_loss": mse(ft, ds.y_test), "test_acc": accuracy(ft, ds.y_test),
            "train_loss": mse(f, ds.y_train)}


def sizes(p) -> tuple[np.ndarray, tuple]:
    """(N values of the theory sweep, N values with finite-width training)."""
    n_max = 360 - p.n_test                # digits 0 vs 1 have 360 images
    finite = (p.n_train, int(min(n_max, max(80, 3 * p.n_train))))
    sweep = np.round(64 * np.array(SWEEP.get(p.name, SWEEP_DEFAULT)))
    ns = np.unique(np.clip(np.concatenate([sweep, finite]), 4, n_max).astype(int))
    return ns, finite


def compute(ctx: Context) -> dict:
    """Every number of the figure, with the dense LAPACK work (kernels' methods, eigen-
    decompositions of G) on one BLAS thread: multi-threaded OpenBLAS gives results that vary from
    run to run in the last bits (amplified by the nearly singular operators of Forster inputs) and
    is 10-30x slower on these small matrices on a busy machine."""
    with serial_blas():
        return _compute(ctx)


def _compute(ctx: Context) -> dict:
    p = ctx.profile
    if p.data_dir:
        raise ValueError("the generalization figure uses the bundled digits (whitening); "
                         "run it without --data-dir")
    ns, finite_ns = sizes(p)
    out = {"n": ns, "finite_n": np.array(finite_ns), "steps": NGD_STEPS,
           "gd_steps": GD_STEPS.get(p.name, GD_STEPS_DEFAULT), "width": p.width, "prep": {}}
    if ctx.devices is not None:     # absent on the dense path: the committed JSON is unchanged
        out["devices"] = int(ctx.devices)
    for prep in ctx.progress(PREPS, desc=NAME):          # theory: cheap, every N
        dims, rows, notes = [], [], []
        for n in ns:
            ds, why = _data(p, int(n), prep)
            dims.append(np.nan if ds is None else ds.input_dim)
            notes.append(why)
            rows.append({} if ds is None else ctx.cache.get_or_compute(
                f"theory_{prep}_n{n}", lambda ds=ds: _theory(p, ds, SEEDS, ctx.devices)))
        rec = {"d": dims, "notes": notes, "data": {}}
        for key in sorted({k for r in rows for k in r}):
            rec[key] = [r.get(key, "" if key.endswith("/backend") else np.nan) for r in rows]
        out["prep"][prep] = rec
    jobs = [(n, prep) for n in finite_ns for prep in PREPS]   # the profile's N first
    for n, prep in ctx.progress(jobs, desc=f"{NAME} (finite width)"):
        ds, why = _data(p, int(n), prep)
        if ds is None:
            continue
        rec = out["prep"][prep]
        rec["data"][str(n)] = data_record(ds)
        for m in METHOD_ORDER:
            r = ctx.cache.get_or_compute(f"finite_{prep}_n{n}_{m}" + ("_hb" if m == "gd" else ""),
                                         lambda ds=ds, m=m: _finite(p, ds, m, 0))
            for k, v in r.items():
                rec[f"finite/{m}/{k}/n{n}"] = v
    out["preprocessing"] = {k: v["data"] for k, v in out["prep"].items()}
    return out


def plot(res: dict, ctx: Context) -> list:
    fig, axes = subplots(3, 2, width=4.6, height=3.6)
    n = np.asarray(res["n"], float)
    for j, prep in enumerate(PREPS):
        rec = res["prep"][prep]
        d = np.asarray(rec["d"], float)
        for i, (key, ylabel) in enumerate((("test_acc", "test accuracy"),
                                           ("test_loss", "test loss"))):
            ax = axes[i * 3 + j]
            for m in METHOD_ORDER:
                if f"{m}/{key}" in rec:
                    ax.plot(n / d, np.minimum(np.asarray(rec[f"{m}/{key}"], float), CLIP), "-",
                            color=COLORS[m], lw=1.4, label=f"{LABELS[m]} theory")
                for fn in res["finite_n"]:
                    v = rec.get(f"finite/{m}/{key}/n{fn}")
                    if v is not None:
                        v = min(v, CLIP)
                        dd = rec["data"][str(fn)]["d"]
                        ax.plot(fn / dd, v, MARKERS[m], color=COLORS[m], mfc="none", ms=7,
                                label=f"{LABELS[m]} width {res['width']}" if fn ==
                                res["finite_n"][0] or prep == "forster" else None)
            ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
            log_axis_at(ax, [0.25, 0.5, 1, 2, 4])
            ax.set_xlim(0.2, 5)
            ax.set_xlabel("N / d")
            ax.set_ylabel(ylabel)
            if key == "test_loss":
                ax.set_yscale("log")
                ax.set_ylim(top=2 * CLIP)
            else:
                ax.set_ylim(0.45, 1.02)
            ax.set_title(PREP_LABELS[prep], fontsize=9)
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=4, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"Digits 0 vs 1, L = {ctx.profile.depth} ReLU: theory at t -> infinity (lines, "
                 f"mean of {SEEDS} f_0) against width {res['width']} trained "
                 f"({res['steps']} NGD steps; GD: {res['gd_steps']} momentum steps to its fixed "
                 f"point; markers).\nTest losses above {CLIP:g} drawn at {CLIP:g}. Forster: "
                 "isotropic in the span shared by the training inputs (pixels used by too few "
                 "images removed; the authors' 100 iterations)" + _no_limit_note(res) +
                 _backend_note(res),
                 fontsize=9)
    return save_figure(fig, ctx, NAME)


def _no_limit_note(res: dict) -> str:
    """Caption text naming the theory points without a t -> infinity limit (a growing mode)."""
    n = np.asarray(res["n"], float)
    hits = [f"{LABELS[m]} ({prep}, N/d = {n[i] / res['prep'][prep]['d'][i]:.2g})"
            for prep in PREPS for m in METHOD_ORDER
            for i, v in enumerate(res["prep"][prep].get(f"{m}/train_loss", []))
            if np.isinf(float(v))]
    return ("" if not hits else ".\nNo limit (G has an eigenvalue with negative real part; loss "
            f"drawn at {CLIP:g}, no accuracy): " + ", ".join(hits))


def _backend_note(res: dict) -> str:
    """Caption text naming the methods whose theory lines the sharded backend computed on a
    device mesh (every point of the line), and those computed by the dense path."""
    if "devices" not in res:
        return ""
    def every(m, backend):
        got = [b for prep in PREPS for b in res["prep"][prep].get(f"{m}/backend", []) if b]
        return bool(got) and all(b == backend for b in got)
    drawn = [m for m in METHOD_ORDER if any(f"{m}/backend" in res["prep"][p] for p in PREPS)]
    sharded = [LABELS[m] for m in drawn if every(m, "sharded")]
    dense = [LABELS[m] for m in drawn if every(m, "dense")]
    mixed = [LABELS[m] for m in drawn if not every(m, "sharded") and not every(m, "dense")]
    parts = [f"sharded backend on {res['devices']} devices: " + ", ".join(sharded)] if sharded \
        else []
    parts += ["dense path: " + ", ".join(dense)] if dense else []
    parts += ["sharded where its blocks are positive definite, else dense: " +
              ", ".join(mixed)] if mixed else []
    return ".\nTheory lines: " + "; ".join(parts) if parts else ""
