"""Shared pieces of the figure experiments: data, styles, saving."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import data as data_mod  # noqa: E402
from ..store import Cache, atomic_path, config_hash  # noqa: E402
from .profiles import Profile  # noqa: E402

BUILTIN_METHODS = ("gd", "exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise")
# built-in methods beyond the paper's: drawn by the curvature figure only (not METHOD_ORDER)
from ..methods import CURVATURE_METHODS  # noqa: E402


def extra_methods() -> tuple[str, ...]:
    """Methods registered with ntkngd.register_method beyond the built-ins, in registration
    order."""
    from ..methods import method_names
    return tuple(m for m in method_names()
                 if m not in BUILTIN_METHODS and m not in CURVATURE_METHODS)


class _MethodOrder(Sequence):
    """The methods a figure draws, read from the registry at every use: the registered built-ins
    in the paper's order, then every other registered method (`extra_methods`). A figure module
    that imports METHOD_ORDER draws (and computes) a method as soon as it is registered; its cache
    key then records the extra methods (`methods_config`)."""

    def _names(self) -> tuple[str, ...]:
        from ..methods import method_names
        registered = method_names()
        return tuple(m for m in BUILTIN_METHODS if m in registered) + extra_methods()

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter(self._names())

    def __repr__(self) -> str:
        return f"METHOD_ORDER{self._names()!r}"


METHOD_ORDER = _MethodOrder()


def _fingerprint(method, depth: int) -> str:
    """What identifies a registered method's numbers: its pattern S at `depth` for pattern
    methods, else the source of its operator and signals (their names when no source exists)."""
    import inspect
    if method.kind == "pattern" and method.pattern is not None:
        S = np.asarray(method.pattern(depth).matrix, float)
        return config_hash({"kind": "pattern", "S": S.tolist()})
    parts = []
    for fn in (method.operator, method.signals, method.default_damping, method.duals):
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):
            parts.append(getattr(fn, "__qualname__", repr(fn)))
    return config_hash({"kind": method.kind, "code": parts})


def methods_config(depth: int) -> dict:
    """The extra (registered) methods as part of a figure's cache key: name -> fingerprint at
    `depth`; empty with the built-ins only (the committed figures' keys are unchanged)."""
    from ..methods import get_method
    return {m: _fingerprint(get_method(m), depth) for m in extra_methods()}


class _Style(dict):
    """Per-method style with a default for methods registered later (ntkngd.register_method):
    colours and markers cycle through spares, chosen once per name so a method keeps its style."""

    def __init__(self, known: dict, spares):
        super().__init__(known)
        self._spares = list(spares)

    def __missing__(self, key):
        taken = len([k for k in self if k not in BUILTIN_METHODS + CURVATURE_METHODS])
        value = self._spares[taken % len(self._spares)] if self._spares else \
            str(key).replace("_", " ")
        self[key] = value
        return value


LABELS = _Style({"gd": "GD", "exact": "exact NGD", "block_diagonal": "block diagonal",
                 "block_tridiagonal": "block tri-diagonal", "kfac": "K-FAC",
                 "unit_wise": "unit-wise", "diagonal": "diagonal Fisher", "ekfac": "E-KFAC",
                 "shampoo": "Shampoo"}, ())
COLORS = _Style({"gd": "0.45", "exact": "k", "block_diagonal": "tab:blue",
                 "block_tridiagonal": "tab:orange", "kfac": "tab:green", "unit_wise": "tab:red",
                 "diagonal": "tab:brown", "ekfac": "tab:olive", "shampoo": "tab:pink"},
                ("tab:purple", "tab:cyan", "gold", "navy", "teal"))
MARKERS = _Style({"gd": "x", "exact": "o", "block_diagonal": "s", "block_tridiagonal": "^",
                  "kfac": "D", "unit_wise": "v", "diagonal": "P", "ekfac": "*", "shampoo": "h"},
                 ("<", ">", "p", "8", "X"))


@dataclass
class Context:
    """What a figure's compute and plot functions get: the profile, where to write, a cache, and
    the device count of a one-axis mesh (None: the dense path) for figures with USES_DEVICES."""

    profile: Profile
    out_dir: str
    cache: Cache
    progress: Callable[[Any], Any] = lambda it, **_: it
    devices: Optional[int] = None


def binary_data(profile: Profile, n_train: int | None = None,
                whiten: bool = False) -> data_mod.Dataset:
    """0-vs-1 data with +-0.5 targets, prepared as the paper's authors do (one global mean and std
    of the training array, then unit-norm rows): MNIST (profile.mnist: drawn with seed 0 from the
    bundled test split or from profile.data_dir, d = 784), else scikit-learn's 8 x 8 digits
    (d = 64). whiten=True PCA-whitens the digits first (an explicit option; it is
    not the paper's preprocessing and costs generalization). No Forster transform here: see
    `kfac_data`."""
    n = n_train or profile.n_train
    if profile.mnist:
        if whiten:
            raise ValueError("whitening is implemented for the bundled digits only")
        return data_mod.load_mnist(profile.data_dir, n_train=n, n_test=profile.n_test,
                                   classes=(0, 1), seed=0)
    return data_mod.digits(n_train=n, n_test=profile.n_test, classes=(0, 1), seed=0,
                           whiten=whiten)


FORSTER_ITERS = 100       # the authors' default (numpy-based/train.py)


def kfac_data(ds: data_mod.Dataset) -> tuple[data_mod.Dataset, bool]:
    """K-FAC's inputs as in the paper: Forster's transform (fitted on the training inputs, the
    authors' 100 iterations, on the rows) when N > d, so that K-FAC's first-layer factor is
    isotropic; otherwise `ds` unchanged. Returns (data, applied). Rank-deficient inputs (the
    digits' constant border pixels) are put in isotropic position inside the span they share
    (directions only a few images use removed: `forster_fit(span=True)`); if no transform exists
    they are returned unchanged."""
    if ds.n_train <= ds.input_dim:
        return ds, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return data_mod.forster_dataset(ds, iters=FORSTER_ITERS, span=True), True
    except ValueError:
        return ds, False


def data_record(ds: data_mod.Dataset, kfac_ds: data_mod.Dataset | None = None) -> dict:
    """What the figure's JSON records about its inputs."""
    rec = {"data": ds.name, "n_train": ds.n_train, "n_test": ds.n_test, "d": ds.input_dim,
           "preprocessing": ds.preprocessing}
    if ds.source:
        rec["source"] = ds.source
    if kfac_ds is not None:
        rec["kfac_preprocessing"] = kfac_ds.preprocessing
        rec["kfac_forster"] = kfac_ds is not ds
    return rec


# No dates or versions in the files: the same figure gives the same bytes on every run.
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                                 "CreationDate": None}}


def save_figure(fig, ctx: Context, name: str) -> list[str]:
    """Write NAME.png and NAME.pdf atomically and deterministically; returns the paths."""
    paths = []
    fig.tight_layout()
    for ext in ("png", "pdf"):
        path = os.path.join(ctx.out_dir, f"{name}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=130, bbox_inches="tight", metadata=_METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths


def subplots(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8):
    """A figure with nrows x ncols axes of width x height inches each; returns (fig, flat axes)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def legend(ax, **kw):
    """A small frameless legend."""
    ax.legend(fontsize=8, frameon=False, **kw)


def init_params(net, input_dim: int, seed: int):
    """Standard-normal stax parameters of `net` (NTK parameterization)."""
    import jax
    return net.init_fn(jax.random.PRNGKey(seed), (-1, input_dim))[1]


def step_params(params, direction, lr: float):
    """params - lr * direction (stax parameter lists; activation layers carry ())."""
    from ..engine import apply_update
    return apply_update(params, direction, lr)


def one_step(net, params, ds, method: str, damping=None) -> dict:
    """One parameter-space step of `method` at the infinite-width lr, beside the theory.

    Returns the analytic operator `op` (float64 kernels of `ds`), the residual g = f0 - y and the
    outputs before (f0, f0t) and after (f1, f1t) the step params - op.lr * ngd_direction."""
    from .. import analytic_kernels, operator
    from ..networks.empirical import outputs
    from ..engine import ngd_direction
    op = quiet(operator, method, analytic_kernels(net, ds.x_train, ds.x_test), 0.0)
    f0 = np.asarray(outputs(net, params, ds.x_train), float)
    f0t = np.asarray(outputs(net, params, ds.x_test), float)
    d = quiet(ngd_direction, method, net, params, ds.x_train, ds.y_train, damping=damping)
    p1 = step_params(params, d, op.lr)
    return {"op": op, "g": f0 - ds.y_train, "f0": f0, "f0t": f0t,
            "f1": np.asarray(outputs(net, p1, ds.x_train), float),
            "f1t": np.asarray(outputs(net, p1, ds.x_test), float)}


def quiet(fn, *args, **kwargs):
    """Call fn with the theory-condition warnings silenced (the figures report the numbers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def loss_floor(width: int, targets, dtype: str = "float64", digits: int = 4) -> float:
    """The smallest squared-error loss L = 1/2 mean (f - y)^2 that `digits` significant digits can
    vouch for across BLAS kernels and thread counts. Outputs summed over `width` units carry
    round-off delta = sqrt(width) eps max|y| (eps of `dtype`), which moves L by up to
    sqrt(2 L) delta; that is below 10^-digits of L when L >= 2 delta^2 10^(2 digits)."""
    delta = np.sqrt(width) * np.finfo(dtype).eps * float(np.max(np.abs(targets)))
    return 2.0 * delta ** 2 * 10.0 ** (2 * digits)


def floor_at(values, floor: float):
    """values clipped from below at `floor` (for log axes)."""
    return np.maximum(np.asarray(values, float), floor)


@dataclass
class Setup:
    """The standard experiment: binary data, the profile's ReLU network, its initial parameters,
    the (x_train, y_train, x_test, y_test) tuple and the infinite-width kernels. `for_method`
    gives K-FAC its own inputs (Forster when N > d, as in the paper); every other method uses
    `ds` as is."""

    ds: data_mod.Dataset
    net: Any
    params: Any
    data: tuple
    kernels: Any
    kfac: "Setup | None" = None

    def for_method(self, method: str) -> "Setup":
        return self.kfac if method == "kfac" and self.kfac is not None else self

    def record(self) -> dict:
        return data_record(self.ds, self.for_method("kfac").ds)


def _setup(ds: data_mod.Dataset, net, params) -> Setup:
    from .. import analytic_kernels
    return Setup(ds, net, params, (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
                 analytic_kernels(net, ds.x_train, ds.x_test))


def standard_setup(profile: Profile, seed: int) -> Setup:
    """The profile's standard experiment (see Setup) for parameter seed `seed`."""
    from .. import mlp
    ds = binary_data(profile)
    net = mlp(profile.depth, profile.width, "relu")
    params = init_params(net, ds.input_dim, seed)
    s = _setup(ds, net, params)
    kds, applied = kfac_data(ds)
    if applied:
        s.kfac = _setup(kds, net, params)
    return s


def log_axis_at(ax, values, axis: str = "x") -> None:
    """Log scale with plain tick labels exactly at `values` (no crowded minor labels)."""
    from matplotlib.ticker import FixedLocator, NullLocator
    getattr(ax, f"set_{axis}scale")("log")
    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(FixedLocator(list(values)))
    a.set_minor_locator(NullLocator())
    getattr(ax, f"set_{axis}ticklabels")([f"{v:g}" for v in values])


def seed_stats(values, axis: int = -1) -> dict:
    """Mean and spread over seeds (along `axis`) of positive values drawn on log axes: the
    geometric mean and the geometric one-standard-deviation band, {"mean", "lo", "hi", "n"}
    (lo = hi = mean for one seed; non-positive values are left out of the logs)."""
    v = np.asarray(values, float)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows (no test points)
        logs = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
        n = np.sum(np.isfinite(logs), axis=axis)
        m = np.nanmean(logs, axis=axis)
        s = np.where(n > 1, np.nanstd(logs, axis=axis, ddof=1) if v.shape[axis] > 1 else 0.0, 0.0)
    zero = (n == 0) & np.all(v == 0, axis=axis)        # every network exactly 0: record 0
    out = {k: np.where(zero, 0.0, 10.0 ** x) for k, x in (("mean", m), ("lo", m - s),
                                                          ("hi", m + s))}
    out["n"] = n
    return out


def power_fit(x, values) -> dict:
    """Least-squares power law values ~ c x^slope on log-log axes, every seed's point counted
    (values: (len(x), seeds)), with the slope's 95% confidence interval (Student t):
    {"slope", "ci95", "prefactor", "points"}."""
    from scipy import stats
    v = np.asarray(values, float).reshape(len(x), -1)
    xs = np.repeat(np.asarray(x, float)[:, None], v.shape[1], axis=1)
    ok = np.isfinite(v) & (v > 0)
    lx, ly = np.log10(xs[ok]), np.log10(v[ok])
    nan = {"slope": np.nan, "ci95": np.nan, "prefactor": np.nan, "points": int(ok.sum())}
    if lx.size < 3 or np.ptp(lx) == 0:
        return nan
    fit = stats.linregress(lx, ly)
    half = float(stats.t.ppf(0.975, lx.size - 2) * fit.stderr)
    return {"slope": float(fit.slope), "ci95": half, "prefactor": float(10.0 ** fit.intercept),
            "points": int(lx.size)}


def error_markers(ax, x, stats_: dict, fmt: str, **kw):
    """Markers at the seeds' geometric mean with the geometric standard-deviation band as error
    bars (`seed_stats`)."""
    mean = np.asarray(stats_["mean"], float)
    lo = np.clip(mean - np.asarray(stats_["lo"], float), 0, None)
    hi = np.clip(np.asarray(stats_["hi"], float) - mean, 0, None)
    return ax.errorbar(x, mean, yerr=[lo, hi], fmt=fmt, capsize=2.5, elinewidth=0.9, **kw)


def record_stats(out: dict, key: str, values, axis: int = -1) -> dict:
    """Store `seed_stats` of values under key (the mean), key_lo, key_hi; return the stats."""
    st = seed_stats(values, axis)
    out[key], out[f"{key}_lo"], out[f"{key}_hi"] = st["mean"], st["lo"], st["hi"]
    return st
