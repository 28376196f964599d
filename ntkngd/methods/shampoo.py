"""Shampoo (Gupta, Koren & Singer, 2018) with full-batch statistics: per layer, with the gradient
G_l (k x M), eps = damping and the thin SVD G = U diag(sigma) V^T, d[W_l; b_l] =
    (G G^T + eps I)^(-e) G (G^T G + eps I)^(-e) = U diag(sigma (sigma^2 + eps)^(-2e)) V^T
(e = 1/4 by default: at eps = 0 the polar factor U V^T, as in Muon), sigma^2 below the dtype's
rank cut dropped; wide layers take the SVD through thin QR factors (rank <= N S). Gradient only;
not linear in the residual: no function-space operator (`ntkngd.train` logs the alpha fit).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import linalg
from . import _layers


def _singular_map(sv, damping, exponent: float):
    """sigma (sigma^2 + eps)^(-2e); at eps = 0 sigma^(1 - 4e) on the kept singular values."""
    rtol = linalg.rank_rtol(sv.dtype)
    keep = sv ** 2 > rtol * jnp.maximum(jnp.max(sv) ** 2, jnp.finfo(sv.dtype).tiny)
    safe = jnp.where(keep, sv, 1.0)
    undamped = jnp.where(keep, safe ** (1.0 - 4.0 * exponent), 0.0)
    damped = sv * (sv ** 2 + damping) ** (-2.0 * exponent)
    if isinstance(damping, (int, float)):
        return undamped if damping == 0 else damped
    return jnp.where(damping > 0, damped, undamped)


def layer_update(h, e, damping, exponent: float = 0.25):
    """(L + eps)^(-e) G (R + eps)^(-e) for G = h^T e (h: (rows, k), e: (rows, M))."""
    rows, k = h.shape
    m = e.shape[1]
    if min(k, m) <= rows:            # G is no larger than its factors: its own thin SVD
        u, sv, vt = jnp.linalg.svd(h.T @ e, full_matrices=False)
        return (u * _singular_map(sv, damping, exponent)) @ vt
    qh, rh = jnp.linalg.qr(h.T)      # (k, rows), (rows, rows)
    qe, re = jnp.linalg.qr(e.T)      # (M, rows)
    uc, sv, vct = jnp.linalg.svd(rh @ re.T)
    return (qh @ (uc * _singular_map(sv, damping, exponent))) @ (vct @ qe.T)


def method_update(exponent: float = 0.25):
    """The Method.update of Shampoo with exponent e."""
    def update(K, damping, f, y, loss) -> list:
        r = loss.residual(f, y)
        out = []
        for h, d in _layers.layers(K):
            n, s, k = h.shape
            e = jnp.einsum("nc,ncsm->nsm", r.astype(d.dtype), d) / n
            out.append(layer_update(h.reshape(n * s, k), e.reshape(n * s, -1), damping,
                                    exponent))
        return out
    return update


def operator(K, damping: float = 0.0):
    raise ValueError("shampoo has no fixed function-space operator: its output change is not "
                     "linear in the residual (at eps = 0 it does not scale with it); ntkngd.train "
                     "measures it per step (alpha_fit, deviation)")


signals = _layers.no_signals("Shampoo's")


def method(exponent: float = 0.25, name: str = "shampoo"):
    """A Shampoo Method with exponent e (0 < e <= 1/2) under `name`."""
    from . import Method
    if not 0 < float(exponent) <= 0.5:
        raise ValueError(f"exponent must be in (0, 1/2], got {exponent}")
    return Method(name, operator, signals, update=method_update(float(exponent)), nonlinear=True)
