"""Per-layer statistics of the methods that precondition each layer's gradient directly (diagonal
Fisher, E-KFAC, Shampoo), for MLPs and convolutional serial networks alike: layer l is
    h (N, S, k) (input patches, bias coordinate last), delta (N, C, S, M) (df_c(x_n) / du_l[n, s]),
    J_l[(n, c), (k, m)] = sum_s h[n, s, k] delta[n, c, s, m],
the gradient G_l = J_l^T r / N and the Fisher F = J^T blockdiag(H_n) J / N the Jacobian Gram of the
rooted derivatives H_n^{1/2} delta. jax.numpy (jittable) in the features' dtype.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..networks.kernels import require_features

_CHUNK_BYTES = 64 * 2 ** 20


def layers(K, test: bool = False) -> list:
    """[(h (N, S, k), delta (N, C, S, M))] of every trainable layer of finite-width kernels K
    (training points, or the test points with test=True)."""
    require_features(K, "a per-layer curvature method")
    hts, ds = (K.layer_inputs_test, K.backprops_test) if test else \
        (K.layer_inputs_train, K.backprops_train)
    n, c = (K.n_test if test else K.n_train), K.out_dim
    return [(h, d.reshape(n, c, *d.shape[1:])) for h, d in zip(hts, ds)]


def psd_root(h):
    """Symmetric roots h^{1/2} of PSD matrices (batch; eigenvalues clipped at 0)."""
    w, u = linalg.eigh_symmetric(h)
    return jnp.einsum("nij,nj,nkj->nik", u, jnp.sqrt(jnp.clip(w, 0.0, None)), u)


def hessian_root(loss, f):
    """Per-sample H_n^{1/2} (N, C, C) of the loss's output Hessians; None for H = I (MSE)."""
    return None if loss.identity_hessian else psd_root(linalg.symmetrized(loss.hessian(f)))


def block_diag(root):
    """blockdiag_n(root_n) (n k, n k) of per-sample (n, k, k) matrices."""
    n, k, _ = root.shape
    return jnp.einsum("ab,aij->aibj", jnp.eye(n, dtype=root.dtype), root).reshape(n * k, n * k)


def rooted(delta, root):
    """H_n^{1/2} delta along the output axis (delta itself when root is None)."""
    return delta if root is None else jnp.einsum("ncd,ndsm->ncsm", root.astype(delta.dtype), delta)


def gradient(h, delta, r):
    """G_l = J_l^T r / N (k, M): one matrix product of the inputs with the signals
    e[n, s] = sum_c r[n, c] delta[n, c, s]."""
    n, s, k = h.shape
    e = jnp.einsum("nc,ncsm->nsm", r.astype(delta.dtype), delta)
    return h.reshape(n * s, k).T @ e.reshape(n * s, -1) / n


def diag_fisher(h, dr):
    """diag F_l (k, M) = (1/N) sum_(n,c) J_l[(n, c), (k, m)]^2 for rooted derivatives dr: for a
    dense layer one matrix product (h^2)^T (sum_c dr^2) / N, no cancellation; with positions the
    per-sample Jacobians are formed one sample at a time (lax.scan)."""
    n, s, k = h.shape
    if s == 1:
        return (h[:, 0] ** 2).T @ jnp.sum(dr[:, :, 0] ** 2, axis=1) / n

    def step(acc, args):
        hn, dn = args
        x = jnp.einsum("sk,csm->ckm", hn, dn)
        return acc + jnp.sum(x * x, axis=0), None
    acc = jnp.zeros((k, dr.shape[-1]), jnp.result_type(h.dtype, dr.dtype))
    return jax.lax.scan(step, acc, (h, dr))[0] / n


def jd(h, delta, dw):
    """J_l dw (N, C): the linearized output change of the layer update dw (k, M)."""
    return jnp.einsum("nsm,ncsm->nc", h @ dw.astype(h.dtype), delta)


def inverse_scales(v, damping, rtol=None):
    """1 / (v + rho) for nonnegative scales v; at rho = 0 the pseudo-inverse: 0 where
    v <= rtol x max(v), rtol the dtype's machine epsilon by default (the diagonal Fisher's
    entries are sums of squares, computed without cancellation, so only a true zero is cut).
    Jittable (rho may be traced)."""
    rtol = jnp.finfo(v.dtype).eps if rtol is None else rtol
    keep = v > rtol * jnp.maximum(jnp.max(v), jnp.finfo(v.dtype).tiny)
    pinv = jnp.where(keep, 1.0 / jnp.where(keep, v, 1.0), 0.0)
    if isinstance(damping, (int, float)):
        return pinv if damping == 0 else 1.0 / (v + damping)
    return jnp.where(damping > 0, 1.0 / (v + damping), pinv)


@partial(jax.jit, static_argnums=3)
def scales(h, dr, damping, rtol=None):
    """(1 / (diag F + rho) (`diag_fisher` of rooted derivatives dr, `inverse_scales` with rtol),
    #{diag F kept at rho = 0}) in one compiled pass."""
    fd = diag_fisher(h, dr)
    return inverse_scales(fd, damping, rtol), jnp.sum(inverse_scales(fd, 0.0, rtol) > 0)


def preconditioned_grams(layer_features, damping, rank_cut: bool = False):
    """MSE function-space operator of per-layer diagonal preconditioners P_l = `scales`:
    (G = sum_l (1/N) J_l diag(P_l) J_l^T, G' (None without test rows), #{kept scales}) from
    per-layer (h, delta, h', delta'), the test features h', delta' None when absent; zero scales
    cut at eps, or at `linalg.rank_rtol` with rank_cut (both of the features' dtype)."""
    train, test, kept = 0.0, None, 0
    for h, d, ht, dt in layer_features:
        p, nonzero = scales(h, d, damping, linalg.rank_rtol(h.dtype) if rank_cut else None)
        kept += int(nonzero)
        train = train + weighted_gram(h, d, p)
        if ht is not None:
            test = (0.0 if test is None else test) + weighted_gram(h, d, p, ht, dt)
    return train, test, kept


def no_signals(owner: str):
    """Method.signals of a method whose direction is not of the form Ht^T A (it gives update)."""
    def signals(K, damping, f, y, loss):
        raise ValueError(f"{owner} direction is not of the form Ht^T A: use Method.update "
                         "(ntkngd.ngd_direction does)")
    return signals


def right_basis(rows):
    """Eigenbasis of rows^T rows (cols x p, p = min(rows, cols)) from the thin SVD of `rows`
    (no squared condition number), columns whose eigenvalue sigma^2 falls below the dtype's rank
    cut (`linalg.rank_rtol` x the largest) set to zero. Static shapes: jittable."""
    _, sv, vt = jnp.linalg.svd(rows, full_matrices=False)
    rtol = linalg.rank_rtol(rows.dtype)
    keep = sv ** 2 > rtol * jnp.maximum(sv[0] ** 2, jnp.finfo(sv.dtype).tiny)
    return vt.T * keep[None, :].astype(vt.dtype)


def weighted_gram(h, delta, p, h2=None, delta2=None) -> np.ndarray:
    """(1/N) J_l(2) diag(p) J_l^T (m2 x m, m = N C) for a preconditioner diag(p) (p (k, M)); h2,
    delta2: the left points (default: training). numpy, in chunks of input coordinates that keep
    each formed Jacobian below 64 MB."""
    h, delta, p = (np.asarray(a) for a in (h, delta, p))
    h2 = h if h2 is None else np.asarray(h2)
    delta2 = delta if delta2 is None else np.asarray(delta2)
    n, s, k = h.shape
    c, m = delta.shape[1], delta.shape[-1]
    per_k = (h.shape[0] + h2.shape[0]) * c * m * h.dtype.itemsize
    step = max(1, min(k, _CHUNK_BYTES // max(per_k, 1)))
    out = np.zeros((h2.shape[0] * c, n * c), np.result_type(h.dtype, p.dtype))
    for a in range(0, k, step):
        b = min(k, a + step)
        x2 = _jacobian(h2[:, :, a:b], delta2)
        x = _jacobian(h[:, :, a:b], delta)
        out += (x2 * p[a:b].reshape(1, -1)) @ x.T
    return out / n


def _jacobian(h, delta) -> np.ndarray:
    """J[(n, c), (k, m)] = sum_s h[n, s, k] delta[n, c, s, m] (numpy)."""
    n, s, k = h.shape
    c, m = delta.shape[1], delta.shape[-1]
    if s == 1:
        return (h[:, 0, None, :, None] * delta[:, :, 0, None, :]).reshape(n * c, k * m)
    return np.einsum("nsk,ncsm->nckm", h, delta, optimize=True).reshape(n * c, k * m)
