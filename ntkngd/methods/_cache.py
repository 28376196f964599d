"""Per-Kernels cache of factorisations (jax arrays), so that methods sharing a matrix factor it
once; entries live as long as the Kernels object (weakref.finalize drops them).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable

import jax.numpy as jnp

_CACHE: dict[tuple[int, str], Any] = {}


def cached(K, key: str, compute: Callable[[], Any]) -> Any:
    """compute() once per (Kernels object, key)."""
    full = (id(K), key)
    if full not in _CACHE:
        _CACHE[full] = compute()
        weakref.finalize(K, _CACHE.pop, full, None)
    return _CACHE[full]


def peek(K, key: str) -> Any:
    """The cached value of (K, key), or None when nothing computed it yet."""
    return _CACHE.get((id(K), key))


def total_block(K) -> jnp.ndarray:
    """The total NTK sum_l Theta_l as a (1, m, m) block stack (exact NGD's single block)."""
    return cached(K, "total", lambda: jnp.asarray(K.blocks_train).sum(0)[None])


def block_factors(K, which: str = "layers"):
    """(Cholesky factors, per-block positive-definite flags) of K's per-layer blocks ("layers")
    or of the total NTK ("total") (`dual_solve.cholesky_per_block`), once per Kernels object."""
    from .dual_solve import cholesky_per_block
    mats = total_block(K) if which == "total" else jnp.asarray(K.blocks_train)
    return cached(K, "chol_" + which, lambda: cholesky_per_block(mats))


def first_layer_pd(K) -> bool:
    """Whether the first-layer forward Gram Q_1 is numerically positive definite (N <= d). It has
    rank <= d + 1 (inputs and bias), so it is not when N > d + 1 (no Cholesky needed)."""
    from .dual_solve import cholesky_per_block
    if 0 < K.input_dim and K.n_train > K.input_dim + 1:
        return False
    return cached(K, "q1_pd", lambda: bool(cholesky_per_block(
        jnp.asarray(K.fwd_train[0])[None])[1][0]))
