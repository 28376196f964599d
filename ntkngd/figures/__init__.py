"""The figure set: each module computes numbers (cached by configuration and code), draws theory
(lines) against finite-width training (markers) and writes NAME.png, NAME.pdf and NAME.json
atomically and deterministically (a file whose bytes did not change is left untouched).

The quick profile writes into figures/ (the committed figures); any other profile defaults to
figures/<profile>/, so it never overwrites them."""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from typing import Iterable, Optional

from ..store import (Cache, config_hash, file_digest, read_json, remove_stale_temps, vouched,
                     write_json)
from .profiles import PROFILES, Profile, get

# name -> module (order = the order they run and appear in the README)
_MODULES = ("convergence", "lr_sweep", "width_gap", "spectra", "test_functions", "btd_depth",
            "kfac_nd", "unit_wise_width", "cross_entropy", "generalization",
            "kfac_limit", "cnn", "curvature")
FIGURE_VERSION = 1
DEFAULT_PROFILE = "quick"
JSON_DIGITS = 4     # what the results vouch for across BLAS kernels (store.vouched)
_EXTENSIONS = ("png", "pdf", "json")


def available() -> tuple[str, ...]:
    """Names of the figures, in the order they run."""
    return _MODULES


def default_out_dir(profile: str, root: str = "figures") -> str:
    """Where a profile's figures go without --out: `root` for the quick profile (the committed
    figures), `root/<profile>` for any other, so that no profile overwrites another."""
    return root if profile == DEFAULT_PROFILE else os.path.join(root, profile)


def draws_methods(name: str) -> bool:
    """Whether figure `name` loops over the registry's methods (its module uses
    common.METHOD_ORDER), so that every method registered with ntkngd.register_method is drawn."""
    from .common import METHOD_ORDER
    return getattr(_module(name), "METHOD_ORDER", None) is METHOD_ORDER


def _outputs_intact(stamp: str, outputs: list[str]) -> bool:
    """Whether every output exists with the bytes recorded when it was computed."""
    try:
        recorded = read_json(stamp)["sha256"]
        return all(recorded[os.path.basename(p)] == file_digest(p) for p in outputs)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _module(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown figure {name!r}; choose from {list(_MODULES)}")
    return importlib.import_module(f"{__name__}.{name}")


def _progress(enabled: bool):
    if not enabled:
        return lambda it, **_: it
    from tqdm.auto import tqdm
    return lambda it, desc=None: tqdm(it, desc=desc, leave=False, file=sys.stderr)


def uses_devices(name: str) -> bool:
    """Whether figure `name` computes on a device mesh when given a device count (its module
    sets USES_DEVICES = True); the others ignore `devices`."""
    return bool(getattr(_module(name), "USES_DEVICES", False))


def run_one(name: str, profile: Profile, out_dir: str, force: bool = False,
            progress: bool = False, devices: Optional[int] = None) -> str:
    """Compute (or reuse) and draw one figure. Returns 'cached' or 'computed'. devices: the
    device count of the sharded backend's mesh for figures that use one (`uses_devices`; part
    of their cache key), None for the dense path.

    'cached' needs this configuration and code's part cache with a record of the outputs' bytes,
    and every output (PNG, PDF, JSON) still having those bytes: a fresh clone (no cache), an edit
    to the library, or a truncated or missing output recomputes. Temporary files left by an
    interrupted save are removed first."""
    mod = _module(name)
    from . import common
    config = {"figure": name, "profile": profile.config(), "version": FIGURE_VERSION}
    extra = common.methods_config(profile.depth) if draws_methods(name) else {}
    if extra:        # registered methods: their own key (built-ins only: the key is unchanged)
        config["methods"] = extra
    devices = devices if devices is not None and uses_devices(name) else None
    if devices is not None:      # without a device count the key is unchanged
        config["devices"] = int(devices)
    key = config_hash(config)
    json_path = os.path.join(out_dir, f"{name}.json")
    outputs = [os.path.join(out_dir, f"{name}.{ext}") for ext in _EXTENSIONS]
    cache_root = os.path.join(out_dir, ".cache", name)
    if os.path.isdir(out_dir):
        remove_stale_temps(out_dir, name)
    for directory, _, _ in os.walk(cache_root):      # every configuration's parts
        remove_stale_temps(directory)
    cache = Cache(cache_root, config, force=force)
    stamp = os.path.join(cache.directory, "outputs.json")
    if not force and _outputs_intact(stamp, outputs):
        return "cached"
    ctx = common.Context(profile, out_dir, cache, _progress(progress), devices)
    t0 = time.perf_counter()
    # drawn and recorded at JSON_DIGITS significant digits, round-off recorded as 0
    # (store.vouched): BLAS kernels and thread counts change the last digits of nearly every
    # number, and no committed file should change with them; no timings or dates in the JSON
    results = vouched(mod.compute(ctx), JSON_DIGITS)
    mod.plot(results, ctx)
    write_json(json_path, {"figure": name, "title": mod.TITLE, "hash": key, "config": config,
                           "results": results}, digits=JSON_DIGITS)
    write_json(stamp, {"seconds": time.perf_counter() - t0,
                       "sha256": {os.path.basename(p): file_digest(p) for p in outputs}})
    return "computed"


def run(names: Optional[Iterable[str]] = None, profile: str | Profile = "quick",
        out_dir: Optional[str] = None, force: bool = False, progress: bool = False,
        log=print, devices: Optional[int] = None) -> dict[str, str]:
    """Run the figures (all by default) into `out_dir` (None: `default_out_dir(profile)`). A
    figure that fails is reported by name and the others still run. devices: see `run_one`
    (the caller makes them available: ntkngd.sharded.mesh.request_devices). Returns
    name -> 'cached' | 'computed' | 'failed: ...'."""
    prof = get(profile) if isinstance(profile, str) else profile
    if out_dir is None:
        out_dir = default_out_dir(prof.name)
    names = list(names) if names else list(_MODULES)
    for n in names:
        _module(n)
    status = {}
    for n in names:
        t0 = time.perf_counter()
        try:
            status[n] = run_one(n, prof, out_dir, force, progress, devices)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report in one line, keep going; the traceback goes to a file
            status[n] = f"failed: {type(e).__name__}: {e}"
            trace = os.path.join(out_dir, ".cache", f"{n}.traceback.txt")
            try:
                os.makedirs(os.path.dirname(trace), exist_ok=True)
                with open(trace, "w") as fh:
                    traceback.print_exc(file=fh)
                status[n] += f" (traceback in {trace})"
            except OSError:
                pass
        log(f"{n:>16s}: {status[n]} ({time.perf_counter() - t0:.1f} s)")
    return status


__all__ = ["run", "run_one", "uses_devices", "available", "default_out_dir", "PROFILES", "Profile",
           "get"]
