"""Input validation shared by every public function: clear errors that name the problem."""
from __future__ import annotations

from typing import Any

import numpy as np


class TheoryConditionWarning(UserWarning):
    """A condition of the isotropy theory fails, but the quantity was still computed honestly."""


def as_array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert `x` to a real numeric array, checking rank, emptiness and finiteness (complex
    values are refused, never cast to their real part)."""
    if x is None:
        raise ValueError(f"{name} is required but got None")
    try:
        arr = np.asarray(x)
    except Exception as e:  # pragma: no cover - numpy conversion error
        raise TypeError(f"{name} could not be converted to an array: {e}") from e
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype} (the theory and the "
                        f"networks are real; pass the real and imaginary parts as features)")
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


def _row_norms(x: Any) -> np.ndarray:
    """Euclidean norm of each row (one per point, any trailing shape), without overflow."""
    xs = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    scale = float(np.max(np.abs(xs)))
    return scale * np.linalg.norm(xs / scale, axis=-1) if scale else np.zeros(len(xs))


def input_scale(x: Any, name: str, dtype: Any = np.float64) -> None:
    """Raise unless the non-zero row norms r of `x` (one row per point, any trailing shape) lie in
    [tiny^(1/4), max^(1/4)] of `dtype` (float64: [1.2e-77, 1.2e77], float32: [3.3e-10, 4.3e9]):
    kernels grow like r^2 and the solves multiply two of them, so outside this range they
    overflow (NaN) or underflow (alpha 0, a zero direction), a silent wrong answer."""
    norms = _row_norms(x)
    norms = norms[norms > 0]
    if norms.size == 0:
        return
    info = np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64)
    lo, hi = float(info.tiny) ** 0.25, float(info.max) ** 0.25
    if norms.max() > hi or norms.min() < lo:
        raise ValueError(f"{name} has row norms from {norms.min():.3g} to {norms.max():.3g}, "
                         f"outside [{lo:.2g}, {hi:.2g}] where the kernels (~ norm^2) and their "
                         f"products stay finite and normal in {info.dtype}; rescale the inputs "
                         "(e.g. unit-norm rows, ntkngd.data.unit_norm_rows)")


def outputs(y: Any, name: str, n: int, c: int) -> np.ndarray:
    """Outputs or targets of shape (n, c); a 1-D vector is accepted when c == 1."""
    arr = as_array(y, name)
    if arr.ndim == 1 and c == 1:
        arr = arr[:, None]
    if arr.shape != (n, c):
        raise ValueError(f"{name} must have shape ({n}, {c}) (points x outputs), got {arr.shape}")
    return arr


def finite_kernels(arrays: dict[str, Any], x: np.ndarray, name: str = "x_train") -> None:
    """Raise if kernels computed from inputs `x` overflowed (inf or NaN entries).

    Kernels grow like ||x||^2 and products of two of them appear inside the activations' kernels,
    so float64 overflows once input norms reach ~1e77 (less for float32 or for some
    activations); a NaN alpha downstream would be a silent wrong answer."""
    for label, arr in arrays.items():
        if arr is not None and not np.all(np.isfinite(np.asarray(arr))):
            norm = float(_row_norms(x).max())
            raise ValueError(f"kernels overflowed: {label} has inf or NaN entries for {name} with "
                             f"row norms up to {norm:.3g}; rescale the inputs (e.g. unit-norm "
                             f"rows, ntkngd.data.unit_norm_rows)")


def _number(value: Any, name: str, ok, what: str) -> float:
    v = float(value)
    if not np.isfinite(v) or not ok(v):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def positive(value: Any, name: str) -> float:
    """A finite number > 0 (float)."""
    return _number(value, name, lambda v: v > 0, "a positive finite number")


def non_negative(value: Any, name: str) -> float:
    """A finite number >= 0 (float)."""
    return _number(value, name, lambda v: v >= 0, ">= 0 (finite)")


def integer(value: Any, name: str) -> int:
    """An integral number as a Python int: int, numpy / JAX integer scalars and integral floats
    (64.0) are accepted; bools, strings, non-integral or non-finite numbers are refused."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        arr = np.asarray(value)
    except Exception:  # pragma: no cover - exotic objects
        arr = np.asarray(None)
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.integer)
                             or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = arr.item()
    if isinstance(v, float) and (not np.isfinite(v) or v != int(v)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(v)


def positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (see `integer` for what counts as an integer)."""
    return _at_least(integer(value, name), 1, value, name, "a positive integer")


def non_negative_int(value: Any, name: str) -> int:
    """An integer >= 0 (see `integer`)."""
    return _at_least(integer(value, name), 0, value, name, "an integer >= 0")


def _at_least(v: int, low: int, value: Any, name: str, what: str) -> int:
    if v < low:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def choice(value: str, name: str, options) -> str:
    """`value` if it is one of `options`, else a ValueError listing them."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(options)}")
    return value
