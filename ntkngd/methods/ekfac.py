"""E-KFAC, eigenvalue-corrected K-FAC (George et al., NeurIPS 2018): K-FAC's Kronecker eigenbasis
with the Fisher's own diagonal in it as the scales.

Per layer (`_layers`: h, delta, dr = H_n^{1/2} delta), U_A, U_B are the right singular vectors
of the stacked h and dr rows (the dtype's rank cut; the null spaces carry no gradient), and
    s_ij = (1/N) sum_(n,c) (sum_s (U_A^T h)_j (U_B^T dr)_i)^2,
    d[W_l; b_l] = U_A [ (U_A^T G_l U_B) / (s + rho) ] U_B^T     (pseudo-inverse at rho = 0).
MSE: G = sum_l (1/N) Jr_l diag(1/(s + rho)) Jr_l^T needs only the Grams of h and delta (the same
formula on infinite-width kernels is the wide limit); at rho = 0 tr G = #{s_ij > 0}.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..dynamics.linear import Operator
from . import _layers


def _rotated(h, d, dr):
    """(h U_A, delta U_B, dr U_B, U_A, U_B) with the bases from the rooted statistics."""
    n, s, k = h.shape
    c, m = dr.shape[1], dr.shape[-1]
    ua = _layers.right_basis(h.reshape(n * s, k))
    ub = _layers.right_basis(dr.reshape(n * c * s, m))
    return h @ ua, d @ ub, dr @ ub, ua, ub


_rotated_jit = jax.jit(_rotated)


def update(K, damping, f, y, loss) -> list:
    """Per-layer directions U_A [(U_A^T G U_B) / (s + rho)] U_B^T (jax.numpy, jittable)."""
    r = loss.residual(f, y)
    root = _layers.hessian_root(loss, f)
    out = []
    for h, d in _layers.layers(K):
        ha, db, dbr, ua, ub = _rotated(h, d, _layers.rooted(d, root))
        p = _layers.inverse_scales(_layers.diag_fisher(ha, dbr), damping,
                                   linalg.rank_rtol(ha.dtype))
        out.append(ua @ ((_layers.gradient(ha, db, r) * p) @ ub.T))
    return out


signals = _layers.no_signals("E-KFAC's")


def _gram_features(q, qt):
    """Rotated features of a dense layer from its Gram alone: V W^{1/2} (N x N) and the test
    rows q(X', X) V W^{-1/2}, eigenvalues below the dtype's rank cut dropped (zero columns)."""
    w, v, keep = linalg.kept_spectrum(linalg.symmetrized(jnp.asarray(q, jnp.float64)))
    root = jnp.where(keep, jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
    train = v * root
    test = None if qt is None else \
        (jnp.asarray(qt, jnp.float64) @ v) * jnp.where(keep, 1.0 / jnp.where(keep, root, 1.0), 0.0)
    return train, test


def _rotated_features(K, l: int):
    """(h, delta, h', delta') rotated features of layer l: from the layer features on
    finite-width kernels, from the Grams Q_l, B_l on infinite-width ones (C = 1 block of
    B_l (x) I_C: its Kronecker eigenbasis); h', delta' None without test points."""
    if K.has_features:
        h, d = _layers.layers(K)[l]
        ha, db, _, ua, ub = _rotated_jit(h, d, d)
        if not K.has_test:
            return ha, db, None, None
        ht, dt = _layers.layers(K, test=True)[l]
        return ha, db, ht @ ua, dt @ ub
    ha, hat = _gram_features(K.fwd_train[l], K.fwd_test[l] if K.has_test else None)
    db, dbt = _gram_features(K.bwd_train[l], K.bwd_test[l] if K.has_test else None)
    test = (hat[:, None, :], dbt.reshape(K.n_test, 1, 1, -1)) if K.has_test else (None, None)
    return (ha[:, None, :], db.reshape(K.n_train, 1, 1, -1)) + test


def operator(K, damping: float = 0.0) -> Operator:
    """MSE function-space operator G = sum_l (1/N) Jr diag(1/(s + rho)) Jr^T (and G'), on
    finite-width kernels (MLP or serial) from the layer features, on infinite-width MLP kernels
    from the per-layer Grams (the wide limit; module docstring)."""
    if not K.has_features and K.bwd_train is None:
        raise ValueError("E-KFAC on infinite-width kernels needs per-layer forward and backward "
                         "Grams (MLPs); for this network use finite-width (empirical) kernels")
    feats = (_rotated_features(K, l) for l in range(K.depth))
    train, test, kept = _layers.preconditioned_grams(feats, damping, rank_cut=True)
    m = int(np.asarray(train).shape[0])
    notes = (f"E-KFAC: {kept} non-zero scales s_ij; at rho = 0 tr G = that count, alpha = "
             f"{kept / m:.6g} (trace identity); no isotropy is predicted",)
    return Operator("ekfac", np.asarray(train, np.float64),
                    None if test is None else np.asarray(test, np.float64), None, float(damping),
                    K.out_dim, K.kron_outputs, {"damping == 0": damping == 0}, notes)
