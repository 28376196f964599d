"""Atomic files and a configuration-keyed result cache.

Every file is written to a temporary name in the same directory and moved into place with
`os.replace`, so a crash never leaves a half-written result and never clobbers the old one.
Results are keyed by a hash of their configuration: a rerun with the same configuration reuses
them, a changed configuration recomputes, and an interrupted run resumes from the parts it saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path; on success it replaces `path` atomically, on error it is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def write_json(path: str, obj: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(_jsonable(obj), fh, indent=1, sort_keys=True)


def read_json(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


def write_npz(path: str, arrays: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def config_hash(config: Any) -> str:
    text = json.dumps(_jsonable(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Cache:
    """Parts of one computation stored as NPZ files under `directory`, keyed by configuration."""

    def __init__(self, directory: str, config: Any, force: bool = False):
        self.directory = os.path.join(directory, config_hash(config))
        self.force = force
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> str:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        return os.path.join(self.directory, f"{safe}.npz")

    def get_or_compute(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, np.ndarray]:
        path = self.path(key)
        if not self.force and os.path.exists(path):
            try:
                self.hits += 1
                return read_npz(path)
            except (OSError, ValueError):      # unreadable: recompute
                self.hits -= 1
        self.misses += 1
        result = {k: np.asarray(v) for k, v in compute().items()}
        write_npz(path, result)
        return result
