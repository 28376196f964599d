"""Input validation shared by every public function: clear errors that name the problem."""
from __future__ import annotations

from typing import Any

import numpy as np


class TheoryConditionWarning(UserWarning):
    """A condition of the isotropy theory fails, but the quantity was still computed honestly."""


def as_array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert `x` to a float array, checking rank, emptiness and finiteness."""
    if x is None:
        raise ValueError(f"{name} is required but got None")
    try:
        arr = np.asarray(x)
    except Exception as e:  # pragma: no cover - numpy conversion error
        raise TypeError(f"{name} could not be converted to an array: {e}") from e
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.size == 0 or (arr.ndim >= 1 and arr.shape[0] == 0):
        raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one point")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s)")
    return arr


def inputs(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A 2-D input matrix (points x features), optionally with a fixed feature dimension."""
    arr = as_array(x, name, ndim=2)
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} features but {dim} were expected "
                         f"(shape {arr.shape})")
    return arr


def outputs(y: Any, name: str, n: int, c: int) -> np.ndarray:
    """Outputs or targets of shape (n, c); a 1-D vector is accepted when c == 1."""
    arr = as_array(y, name)
    if arr.ndim == 1 and c == 1:
        arr = arr[:, None]
    if arr.shape != (n, c):
        raise ValueError(f"{name} must have shape ({n}, {c}) (points x outputs), got {arr.shape}")
    return arr


def positive(value: Any, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def non_negative(value: Any, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be >= 0 (finite), got {value!r}")
    return v


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def choice(value: str, name: str, options) -> str:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(options)}")
    return value
