"""Per-Kernels cache of Cholesky factors, so methods sharing blocks factor them once."""
from __future__ import annotations

import weakref

import numpy as np

from .. import linalg

_FACTORS: dict[tuple[int, str], list] = {}


def block_factors(K, which: str = "layers") -> list:
    """Cholesky factors (or None where not PD) of K's per-layer blocks ("layers") or of the total
    NTK ("total"), computed once per Kernels object."""
    key = (id(K), which)
    if key not in _FACTORS:
        mats = K.blocks_train if which == "layers" else K.blocks_train.sum(0)[None]
        rtol = linalg.rank_rtol(K.blocks_train.dtype)
        _FACTORS[key] = [linalg.try_cholesky(np.asarray(b, np.float64), rtol) for b in mats]
        weakref.finalize(K, _FACTORS.pop, key, None)
    return _FACTORS[key]
