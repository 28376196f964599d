"""K-FAC: F_l ~ A_l (x) B_l with A = sum_(n,s) Ht Ht^T / N over the layer's input patches (bias
column last) and B = sum_((n,c),s) D D^T / (N S) over its backprops; a dense layer (S = 1) is the
usual K-FAC, a convolution KFC (Grosse & Martens 2016). Damping is factored Tikhonov,
(A + lam I) (x) (B + lam I) with lam = sqrt(rho); lam = 0 gives pseudo-inverses cut at the dtype's
`linalg.rank_rtol`, the same in the primal and the dual form (same non-zero eigenvalues).

Function space (MSE; docs/theory.md), dense layers: G_l = N [Q_l (Q_l + N lam)^{-1}] o
[DD^T (DD^T + N lam)^{-1}] (with positions: the spatial Grams, summed over position pairs), so
with full-rank factors G = (N (L - 1) + 1) I (the output layer contributes its projector).

Parameter space, any loss (R = blockdiag(H_n^{1/2}), z = R H^+ r, E[n, s] = sum_c z[n, c]
(R D)[(n, c), s]): d[W_l; b_l] = (A + lam)^+ (Ht^T E / N) (B + lam)^+, each factor applied in the
smaller of its primal (k x k, M x M) and dual (N S, N C S; Woodbury) forms.
"""
from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from ..dynamics.linear import Operator
from ..linalg import serial_blas
from ..networks.empirical import contract
from . import _layers
from ._factors import (  # noqa: F401 (_factor_terms, _feature_terms: read by the tests here)
    _add_product, _expand, _factor_terms, _feature_terms, _hadamard, _layer_features,
    _ridge_solve, _shared_factor, _terms)


def _b_side(dr, z, lam: float):
    """E (B + lam)^+ (N S x M) for rooted backprops dr (N C, S, M) and z (N, C), as (coefficient
    N S P (Bs + N S lam)^+ (N S x N C S) to multiply by dr, None) when the dual is smaller, else
    (None, the product itself) through the primal M x M Gram."""
    n, c = z.shape
    s, m = dr.shape[1], dr.shape[2]
    flat = dr.reshape(n * c * s, m)
    if m < n * c * s:
        e = jnp.einsum("nc,ncsm->nsm", z, dr.reshape(n, c, s, m)).reshape(n * s, m)
        return None, n * s * _ridge_solve(flat.T @ flat, n * s * lam, e.T).T
    eye_n, eye_s = jnp.eye(n, dtype=z.dtype), jnp.eye(s, dtype=z.dtype)
    pz_t = (z[:, :, None, None, None] * eye_n[:, None, None, :, None]
            * eye_s[None, None, :, None, :]).reshape(n * c * s, n * s)
    return n * s * _ridge_solve(flat @ flat.T, n * s * lam, pz_t).T, None


def _layer(ht, dr, z, lam: float, primal: bool):
    """One layer's K-FAC step: d[W; b] (k x M) through the primal k x k Gram (primal=True), else
    the signal (N, S, M) whose contraction Ht^T A is d[W; b] (module docstring)."""
    n, s, k = ht.shape
    hf, drf = ht.reshape(n * s, k), dr.reshape(-1, dr.shape[-1])
    coef, w = _b_side(dr, z, lam)
    if primal:
        w = coef @ drf if w is None else w
        return _ridge_solve(hf.T @ hf, n * lam, hf.T @ w)
    q = hf @ hf.T
    sig = _ridge_solve(q, n * lam, coef) @ drf if w is None else _ridge_solve(q, n * lam, w)
    return sig.reshape(n, s, -1)


def _rooted_problem(K, damping, f, y, loss):
    """(lam, z = R H^+ r (N, C), [(Ht_l, rooted backprops R D_l (N C, S, M))]) for any loss."""
    x = loss.pinv_residual(f, y)
    root = _layers.hessian_root(loss, f)
    z = x if root is None else jnp.einsum("ncd,nd->nc", root, x)
    layers = [(h, _layers.rooted(d, root).reshape(-1, *d.shape[2:])) for h, d in _layers.layers(K)]
    return float(np.sqrt(damping)), z.astype(layers[0][1].dtype), layers


def signals(K, damping, f, y, loss) -> list:
    """Per-layer signals A_l (N, S, M) of K-FAC for any loss (jax.numpy, jittable), so that
    d[W_l; b_l] = Ht_l^T A_l (both factors in their dual form)."""
    lam, z, layers = _rooted_problem(K, damping, f, y, loss)
    return [_layer(ht, dr, z, lam, False) for ht, dr in layers]


def update(K, damping, f, y, loss) -> list:
    """Per-layer d[W_l; b_l] of K-FAC for any loss (jax.numpy, jittable): each layer's input
    factor in the primal form when it is smaller (k < N S: convolutions, narrow inputs), else
    through the signal."""
    lam, z, layers = _rooted_problem(K, damping, f, y, loss)
    out = []
    for ht, dr in layers:
        primal = ht.shape[2] < ht.shape[0] * ht.shape[1]
        out.append(_layer(ht, dr, z, lam, True) if primal else
                   contract((ht,), (_layer(ht, dr, z, lam, False),))[0])
    return out


def operator(K, damping: float = 0.0) -> Operator:
    """K-FAC's MSE function-space operator G (and G'); KFC when a layer has several positions."""
    if K.bwd_train is None:
        raise ValueError("K-FAC needs per-layer forward and backward kernels: finite-width "
                         "(empirical) kernels, or infinite-width kernels of an MLP")
    with serial_blas(K.bwd_train.shape[-1]):
        if any(s > 1 for s in K.positions):
            return _kfc_operator(K, damping)
        return _operator(K, damping)


def _isotropic_position(diag, dtype) -> bool:
    """Whether the projector diagonal diag(P_X) of the first layer's inputs is constant (the
    inputs are in isotropic position: Forster), to sqrt of the dtype's rank cut."""
    if diag is None:
        return False
    top = float(np.max(np.abs(diag)))
    return top > 0 and float(np.ptp(diag)) <= np.sqrt(linalg.rank_rtol(dtype)) * top


def _operator(K, damping: float) -> Operator:
    n, L = K.n_train, K.depth
    c = 1 if K.kron_outputs else K.out_dim
    fwd, bwd = jnp.asarray(K.fwd_train), jnp.asarray(K.bwd_train)
    m = bwd.shape[1]
    diag_sum = jnp.zeros(m, bwd.dtype)     # the diagonal terms (every one, when isotropic)
    dense_sum = test = None
    ranks_q, ranks_b = [], []
    shift = n * float(np.sqrt(damping))
    for l in range(L):     # same factors as `signals`, applied by solves (no inverse)
        qt, bt = (jnp.asarray(K.fwd_test[l]), jnp.asarray(K.bwd_test[l])) if K.has_test else \
            (None, None)
        # The first layer's input Gram has rank <= d + 1 (inputs and bias).
        known_deficient = l == 0 and 0 < K.input_dim and n > K.input_dim + 1
        factor = _shared_factor(K, l, fwd[l]) if shift == 0 and not known_deficient else None
        pq, pq_t, rq = _terms(fwd[l], qt, shift, _layer_features(K, l, "fwd"), bwd.dtype,
                              known_deficient, factor)
        pb, pb_t, rb = _terms(bwd[l], bt, shift, _layer_features(K, l, "bwd"), bwd.dtype)
        ranks_q.append(rq)
        ranks_b.append(rb)
        if l == 0:
            first_diag = None if pq.is_identity else np.asarray(pq.diag())
        term_diag, term = _hadamard(pq, pb, c, bwd.dtype)
        if term is None:
            diag_sum = diag_sum + n * term_diag
        else:
            dense_sum = _add_product(dense_sum, term, 1.0, float(n))
        if K.has_test:
            test = _add_product(test, _expand(pq_t, c), pb_t, float(n))
    train = jnp.diag(diag_sum) if dense_sum is None else dense_sum + jnp.diag(diag_sum)
    hidden_full = all(rb == m for rb in ranks_b[:-1])
    first_full = ranks_q[0] == n
    conditions = {
        "N <= d (first-layer input Gram invertible)": first_full,
        "every forward Gram invertible": all(r == n for r in ranks_q),
        "N C <= width (backward Grams invertible)": hidden_full,
        "damping == 0": damping == 0,
    }
    notes = ["literal K-FAC: the output layer contributes 1 (the paper's N L rescales it to N)"]
    if not first_full and _isotropic_position(first_diag, fwd.dtype):
        notes.append(f"K-FAC: the first-layer input Gram has rank {ranks_q[0]} < N = {n}, with the "
                     "inputs in isotropic position (diag(P_X) constant): the first layer "
                     f"contributes {ranks_q[0]} I")
    elif not first_full:
        msg = (f"K-FAC: the first-layer input Gram has rank {ranks_q[0]} < N = {n} (fewer input "
               "dimensions than points, or inputs centred on their own mean): the first layer "
               "contributes N diag(P_X), diagonal but not isotropic; put the inputs in isotropic "
               "position (ntkngd.data.forster_transform) to make it constant")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    if not hidden_full or not all(r == n for r in ranks_q[1:]):
        msg = "K-FAC: a hidden-layer factor is rank deficient (N C > width?): not isotropic"
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    alpha = float(n * (L - 1) + 1) if all(conditions.values()) else None
    return Operator("kfac", np.asarray(train), None if test is None else np.asarray(test), alpha,
                    float(damping), K.out_dim, K.kron_outputs, conditions, tuple(notes))


def _spatial_product(pq, pb, n: int, s: int, c: int):
    """sum_{s, s'} pq[(n s), (n' s')] pb[((n c) s), ((n' c') s')] over (m2 x m) output pairs."""
    pq = _expand(pq.reshape(-1, s, n, s), c)
    return jnp.einsum("asbt,asbt->ab", pq, pb.reshape(pq.shape))


def _kfc_operator(K, damping: float) -> Operator:
    """KFC's operator (module docstring) for kernels with a layer of several positions."""
    n, c, lam = K.n_train, K.out_dim, float(np.sqrt(damping))
    dtype = jnp.asarray(K.blocks_train).dtype
    train = test = None
    for l in range(K.depth):
        ht, d = K.layer_inputs_train[l], K.backprops_train[l]
        s = ht.shape[1]
        hf, df = ht.reshape(n * s, -1), d.reshape(n * c * s, -1)
        hft, dft = (K.layer_inputs_test[l].reshape(-1, hf.shape[1]),
                    K.backprops_test[l].reshape(-1, df.shape[1])) if K.has_test else (None, None)
        pq, pq_t, _ = _terms(hf @ hf.T, None if hft is None else hft @ hf.T, n * lam, (hf, hft),
                             dtype)
        pb, pb_t, _ = _terms(df @ df.T, None if dft is None else dft @ df.T, n * s * lam,
                             (df, dft), dtype)
        train = _add_product(train, _spatial_product(pq.matrix(dtype), pb.matrix(dtype), n, s, c),
                             1.0, float(n * s))
        if K.has_test:
            test = _add_product(test, _spatial_product(pq_t, pb_t, n, s, c), 1.0, float(n * s))
    notes = ("KFC (Grosse & Martens 2016): A sums patches over positions, B averages output "
             "gradients over positions; no infinite-width theory: alpha is measured",)
    return Operator("kfac", np.asarray(train, np.float64),
                    None if test is None else np.asarray(test, np.float64), None, float(damping),
                    c, False, {"damping == 0": damping == 0}, notes)
