"""Atomic files and a configuration-keyed result cache.

Every file is written to a temporary name in its directory and moved into place (`os.replace`):
a crash never leaves a half-written result nor clobbers the old one. Results are keyed by a hash
of their configuration and of the package source (`Cache`): a rerun of the same code reuses them,
a changed configuration or library recomputes, an interrupted run resumes from its saved parts.
"""
from __future__ import annotations

import contextlib
import filecmp
import functools
import glob
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path; on success it replaces `path` atomically, on error it is removed.

    A result whose bytes equal the existing file leaves that file untouched (same mtime), so
    regenerating unchanged results does not dirty a work tree."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        if not (os.path.isfile(path) and filecmp.cmp(tmp, path, shallow=False)):
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; results are ordinary files
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temps(directory: str, base: str = "") -> list[str]:
    """Delete temporary files that an interrupted (killed) write left in `directory`: those named
    like atomic_path's, `.BASE.*.tmp*` (any base when `base` is empty). Returns their paths."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}*.tmp*")):
        with contextlib.suppress(OSError):
            os.remove(tmp)
            removed.append(tmp)
    return removed


@functools.lru_cache(maxsize=None)
def source_hash(package_dir: str | None = None) -> str:
    """sha256 (16 hex digits) over the paths and bytes of every .py file of the package (this
    ntkngd by default): the code that computes a result is part of its cache key."""
    root = package_dir or os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for fname in sorted(f for f in filenames if f.endswith(".py")):
            path = os.path.join(dirpath, fname)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as fh:
                digest.update(fh.read() + b"\0")
    return digest.hexdigest()[:16]


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (used to verify that saved outputs are complete)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _jsonable(obj: Any, digits: int | None = None) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), digits)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if not np.isfinite(v):
            return str(v)
        return v if digits is None else float(f"{v:.{digits}g}")
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


ROUNDOFF = 1e-10          # a relative deviation at or below this is round-off: recorded as 0
FLOOR = 1e-20             # any other value below this in magnitude is at the float64 floor: 0
_RELATIVE_KEYS = ("deviation", "departure", "offdiag", "raw", "forster")


def vouched(obj: Any, digits: int, key: str = "") -> Any:
    """`obj` with every float reduced to what the computation can vouch for across BLAS kernels
    and thread counts: `digits` significant digits; relative deviations (keys whose last part
    contains one of _RELATIVE_KEYS) at or below ROUNDOFF and any other value below FLOOR recorded
    as exactly 0. Arrays stay arrays (the figures are drawn from the numbers the JSON records)."""
    if isinstance(obj, dict):
        return {k: vouched(v, digits, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(vouched(v, digits, key) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        last = key.split("/")[-1]
        floor = ROUNDOFF if any(k in last for k in _RELATIVE_KEYS) else FLOOR
        out = np.where(np.abs(obj) <= floor, 0.0, obj)
        with np.errstate(all="ignore"):
            mag = np.where(np.isfinite(out) & (out != 0), np.abs(out), 1.0)
            scale = 10.0 ** (digits - 1 - np.floor(np.log10(mag)))
            return np.where(np.isfinite(out) & (out != 0), np.round(out * scale) / scale, out)
    if isinstance(obj, (np.floating, float)) and not isinstance(obj, bool):
        return float(vouched(np.array([obj], float), digits, key)[0])
    return obj


def write_json(path: str, obj: Any, digits: int | None = None) -> None:
    """Write `obj` as sorted, indented JSON atomically (numpy values converted; inf/NaN as strings).
    `digits`: round floats to that many significant digits (None: full precision), so that
    last-bit differences between machines do not change the file."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(_jsonable(obj, digits), fh, indent=1, sort_keys=True)


def read_json(path: str) -> Any:
    """Parse a JSON file."""
    with open(path) as fh:
        return json.load(fh)


_MANIFEST = "__keys__"


def write_npz(path: str, arrays: dict[str, Any]) -> None:
    """Arrays to an .npz (atomically), with a manifest of their names for `read_npz` to check."""
    if _MANIFEST in arrays:
        raise ValueError(f"{_MANIFEST!r} is reserved for the manifest")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()},
                     **{_MANIFEST: np.array(sorted(arrays), dtype=str)})


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz written by `write_npz`; ValueError if it is incomplete (the manifest
    or a listed array is missing)."""
    with np.load(path, allow_pickle=False) as z:
        if _MANIFEST not in z.files:
            raise ValueError(f"{path}: no manifest of its arrays (not written by write_npz)")
        arrays = {k: z[k] for k in z.files}
    names = [str(k) for k in arrays.pop(_MANIFEST).tolist()]
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}")
    return arrays


def config_hash(config: Any) -> str:
    """sha256 (16 hex digits) of the canonical JSON of `config`."""
    text = json.dumps(_jsonable(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Cache:
    """Parts of one computation stored as NPZ files under `directory`, keyed by configuration and
    by `code` (default: the hash of the package source, so that an edit recomputes)."""

    def __init__(self, directory: str, config: Any, force: bool = False,
                 code: str | None = None):
        key = {"config": config, "code": source_hash() if code is None else code}
        self.directory = os.path.join(directory, config_hash(key))
        if os.path.isdir(self.directory):
            remove_stale_temps(self.directory)
        self.force = force
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> str:
        """The .npz file of part `key` (characters outside [A-Za-z0-9-_.] replaced by _)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        return os.path.join(self.directory, f"{safe}.npz")

    def get_or_compute(self, key: str,
                       compute: Callable[[], dict[str, Any]]) -> dict[str, np.ndarray]:
        """The stored part `key`, or compute() saved as that part. A part that cannot be read
        back completely (empty, truncated, corrupt, missing an array) counts as a miss."""
        path = self.path(key)
        if not self.force and os.path.exists(path):
            try:
                result = read_npz(path)
            except Exception:       # noqa: BLE001 - BadZipFile, EOFError, zlib.error...: recompute
                pass
            else:
                self.hits += 1
                return result
        self.misses += 1
        result = {k: np.asarray(v) for k, v in compute().items()}
        write_npz(path, result)
        return result
