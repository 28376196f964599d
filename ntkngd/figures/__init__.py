"""The figure set: each module computes numbers (cached by configuration), draws theory (lines)
against finite-width training (markers) and writes NAME.png, NAME.pdf and NAME.json atomically."""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from typing import Iterable, Optional

from ..store import Cache, config_hash, read_json, write_json
from .common import Context
from .profiles import PROFILES, Profile, get

# name -> module (order = the order they run and appear in the README)
_MODULES = ("convergence", "lr_sweep", "width_gap", "spectra", "test_functions", "btd_depth",
            "kfac_nd", "unit_wise_width", "cross_entropy", "generalization",
            "kfac_limit")
FIGURE_VERSION = 1


def available() -> tuple[str, ...]:
    return _MODULES


def _module(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown figure {name!r}; choose from {list(_MODULES)}")
    return importlib.import_module(f"{__name__}.{name}")


def _progress(enabled: bool):
    if not enabled:
        return lambda it, **_: it
    from tqdm.auto import tqdm
    return lambda it, desc=None: tqdm(it, desc=desc, leave=False, file=sys.stderr)


def run_one(name: str, profile: Profile, out_dir: str, force: bool = False,
            progress: bool = False) -> str:
    """Compute (or reuse) and draw one figure. Returns 'cached' or 'computed'."""
    mod = _module(name)
    config = {"figure": name, "profile": profile.config(), "version": FIGURE_VERSION}
    key = config_hash(config)
    json_path = os.path.join(out_dir, f"{name}.json")
    outputs = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "pdf")]
    cache = Cache(os.path.join(out_dir, ".cache", name), config, force=force)
    # reuse only what was computed here (the part cache exists): a fresh clone regenerates the
    # committed figures instead of trusting them
    if (not force and os.path.isdir(cache.directory) and os.path.exists(json_path)
            and all(map(os.path.exists, outputs))):
        try:
            if read_json(json_path).get("hash") == key:
                return "cached"
        except (OSError, ValueError):
            pass
    ctx = Context(profile, out_dir, cache, _progress(progress))
    t0 = time.perf_counter()
    results = mod.compute(ctx)
    mod.plot(results, ctx)
    write_json(json_path, {"figure": name, "title": mod.TITLE, "hash": key, "config": config,
                           "seconds": time.perf_counter() - t0, "results": results})
    return "computed"


def run(names: Optional[Iterable[str]] = None, profile: str | Profile = "quick",
        out_dir: str = "figures", force: bool = False, progress: bool = False,
        log=print) -> dict[str, str]:
    """Run the figures (all by default). A figure that fails is reported by name and the others
    still run. Returns name -> 'cached' | 'computed' | 'failed: ...'."""
    prof = get(profile) if isinstance(profile, str) else profile
    names = list(names) if names else list(_MODULES)
    for n in names:
        _module(n)
    status = {}
    for n in names:
        t0 = time.perf_counter()
        try:
            status[n] = run_one(n, prof, out_dir, force, progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report, keep going
            status[n] = f"failed: {type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        log(f"{n:>16s}: {status[n]} ({time.perf_counter() - t0:.1f} s)")
    return status


__all__ = ["run", "run_one", "available", "PROFILES", "Profile", "get"]
