"""Row-wise array checks shared by the data modules: finite float64 arrays and unit-norm rows."""
from __future__ import annotations

from typing import Any

import numpy as np


def finite(x: Any, name: str) -> np.ndarray:
    """x as a float64 array; NaN or inf is a ValueError naming `name`."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} NaN or inf value(s)")
    return arr


def unit_norm_rows(x: Any) -> np.ndarray:
    """Scale every row of the (N, d) array to unit Euclidean norm; a zero row is a ValueError."""
    arr = finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"unit_norm_rows expects a 2-D (N, d) array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"cannot scale zero row(s) to unit norm: row index(es) "
                         f"{zero[:10].tolist()}{' ...' if zero.size > 10 else ''} have norm 0")
    return arr / norms[:, None]
