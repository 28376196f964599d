"""Unit-wise Fisher: one block per unit i of layer l (its incoming weights and bias).

Theta_{l,i} = D_i K_{l-1} D_i with D_i = diag(df/du_{l,i}(x_n)); Theta_{l,i} Theta_{l,i}^+ projects
onto the samples where unit i is active, so G is diagonal with entry n = number of active
(unit, layer) pairs. As M -> infinity: G = alpha I with
    alpha = gamma sum_{l < L} M_l / C + 1,
gamma = fraction of active units (1/2 ReLU, 1 erf). For C > 1 each hidden unit projects, per sample,
onto one direction in output space (isotropic at infinite width), hence the 1/C; the output layer
contributes exactly 1. Needs every K_{l-1} invertible on the active sets (first layer: N <= d).
On infinite-width kernels only this training operator exists (rho -> 0); the test operator needs the
finite-width per-unit kernels.

Finite width (empirical kernels with layer inputs Ht_l and backprops D_l): unit i of layer l owns
column i of the augmented weight [W_l; b_l]; its Jacobian rows are Ht_l[n] D_l[(n, c), i], so
    Theta_{l,i} = (d_i d_i^T) o (Q_l (x) 1 1^T),   d_i = D_l[:, i]  (N C),
and with the parameter-space damping rho (dual shift s = N rho, as for the block patterns)
    v_{l,i} = (Theta_{l,i} + s I)^+ g,   d[W_l; b_l][:, i] = sum_(n,c) v_{l,i}[(n,c)] d_i[(n,c)] Ht_l[n],
    G = sum_{l,i} Theta_{l,i} (Theta_{l,i} + s I)^+,  G' = sum_{l,i} Theta_{l,i}(X', X) (...)^+.
The per-unit solves are batched (chunks of units, float64 numpy). Units with d_i = 0 (inactive on
every sample) contribute nothing and are skipped. With s = 0 the pseudo-inverse (eigh) is used:
exact but slow for wide layers, and at finite width nearly singular blocks give huge updates
(update norm ~ lambda_min(Theta_{l,i})^{-1/2}); `default_damping(K)` (dual shift = 3e-4 x the mean
per-unit block diagonal) is what every entry point uses for unit_wise when damping=None.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from ..linalg import serial_blas
from ..function_space import Operator


def predicted_alpha(net) -> float:
    return float(net.gamma * sum(net.widths) / net.out_dim + 1.0)


_CHUNK_BYTES = 64 * 2 ** 20
DEFAULT_RELATIVE_DAMPING = 3e-4


def default_damping(K) -> float:
    """The one unit-wise damping rule: dual shift N rho = 3e-4 x the mean diagonal of a per-unit
    block, mean diag(Theta) / U with U = sum_l M_l the number of units (hidden and output), i.e.
    rho = 3e-4 mean diag(Theta) / (U N).

    Chosen in experiments/unitwise_damping.py (digits 0 vs 1, N = 40, L = 3 ReLU, widths
    256-4096): the shift that minimizes the worst one-step loss L_1 / L_0 at lr = 1/alpha over
    the widths (0.018, 0.012, 0.0062, 0.0045 at widths 256, 1024, 2048, 4096; undamped: 13, 1.1,
    2.2). Being relative to the per-unit scale (Theta_{l,i} ~ Theta_l / M_l), it lowers alpha by
    the same 9% at every width, where a shift relative to mean diag(Theta) alone lowers it more
    the wider the network (1e-6 of it: 11% at width 256, 24% at 2048). See docs/theory.md."""
    diag = np.mean(np.diag(np.asarray(K.ntk_train, float)))
    units = sum(K.network.widths) + K.network.out_dim
    return float(DEFAULT_RELATIVE_DAMPING * diag / (units * K.n_train))


def _layer_units(K):
    """Per layer: (Qe = Q (x) 1 1^T (m, m), d (m, M_l) float64, active unit indices, Qe' test)."""
    c = K.out_dim
    for l in range(K.depth):
        q = np.asarray(K.fwd_train[l], np.float64)
        d = np.asarray(K.backprops_train[l], np.float64)
        active = np.flatnonzero(np.any(d != 0, axis=0))
        qt = None
        if K.has_test:
            qt = np.kron(np.asarray(K.fwd_test[l], np.float64), np.ones((c, c)))
        yield np.kron(q, np.ones((c, c))), d, active, qt, l


def _chunks(idx: np.ndarray, m: int):
    step = max(1, _CHUNK_BYTES // (8 * m * m))
    for s in range(0, len(idx), step):
        yield idx[s:s + step]


def _unit_blocks(qe: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Theta_{l,i} = (d_i d_i^T) o Qe for a chunk of unit columns dc (m, k) -> (k, m, m)."""
    return dc.T[:, :, None] * qe[None] * dc.T[:, None, :]


@serial_blas()
def _pinv_batch(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched pseudo-inverses and range projectors of PSD blocks (k, m, m) (eigh, rank cut)."""
    w, u = np.linalg.eigh(theta)
    w = np.clip(w, 0.0, None)
    keep = w > linalg.RANK_RTOL * np.maximum(w.max(-1, keepdims=True), np.finfo(float).tiny)
    inv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    return (u * inv[:, None, :]) @ np.swapaxes(u, 1, 2), \
        (u * keep[:, None, :]) @ np.swapaxes(u, 1, 2)


def _finite_operator(K, damping: float):
    """G, G' of the finite-width unit-wise Fisher (see the module docstring)."""
    m = K.blocks_train.shape[1]
    shift = K.n_train * damping
    train = np.zeros((m, m))
    test = np.zeros((K.blocks_test.shape[1], m)) if K.has_test else None
    for qe, d, active, qt, l in _layer_units(K):
        dt = None if qt is None else np.asarray(K.backprops_test[l], np.float64)
        for idx in _chunks(active, m):
            theta = _unit_blocks(qe, d[:, idx])
            if shift > 0:
                theta_s = theta.copy()
                theta_s[:, np.arange(m), np.arange(m)] += shift
                inv = np.linalg.solve(theta_s, np.broadcast_to(np.eye(m), theta.shape))
                train += len(idx) * np.eye(m) - shift * inv.sum(0)   # Theta (Theta + s)^-1 = I - s (.)^-1
            else:
                inv, proj = _pinv_batch(theta)
                train += proj.sum(0)
            if test is not None:
                theta_t = dt[:, idx].T[:, :, None] * qt[None] * d[:, idx].T[:, None, :]
                test += np.einsum("kab,kbc->ac", theta_t, inv)
    return train, test


def active_counts(K) -> np.ndarray:
    """Per sample n: the number of (unit, layer) pairs with a non-zero derivative on x_n
    (any output) -- the diagonal of the undamped unit-wise G for C = 1 (THEORY.md)."""
    n, c = K.n_train, K.out_dim
    return sum(np.any(np.asarray(d).reshape(n, c, -1) != 0, axis=1).sum(1)
               for d in K.backprops_train).astype(float)


def signals(K, damping: float, g: np.ndarray) -> list:
    """Per-layer signals A_l (N, M_l): A_l[n, i] = sum_c v_{l,i}[(n, c)] D_l[(n, c), i], so that
    d[W_l; b_l] = Ht_l^T A_l is the unit-wise direction (batched per-unit dual solves)."""
    from .. import empirical
    empirical.require_features(K, "a unit-wise parameter-space update")
    n, c = K.n_train, K.out_dim
    m = n * c
    r = np.asarray(g, np.float64).reshape(m)
    shift = n * damping
    out = []
    for qe, d, active, _, _ in _layer_units(K):
        a = np.zeros((n, d.shape[1]))
        for idx in _chunks(active, m):
            theta = _unit_blocks(qe, d[:, idx])
            if shift > 0:
                theta[:, np.arange(m), np.arange(m)] += shift
                v = np.linalg.solve(theta,
                                    np.broadcast_to(r[:, None], (len(idx), m, 1)))[..., 0]
            else:
                v = np.einsum("kab,b->ka", _pinv_batch(theta)[0], r)
            a[:, idx] = (v.T * d[:, idx]).reshape(n, c, -1).sum(1)
        out.append(a)
    return out


@serial_blas()
def operator(K, damping: float = 0.0) -> Operator:
    if not K.kron_outputs:
        return _empirical_operator(K, damping)
    return _infinite_operator(K, damping)


def _empirical_operator(K, damping: float) -> Operator:
    from .. import empirical
    empirical.require_features(K, "the finite-width unit-wise operator")
    train, test = _finite_operator(K, damping)
    counts = active_counts(K)
    first_ok = linalg.try_cholesky(np.asarray(K.fwd_train[0], float)) is not None
    conditions = {"N <= d (first-layer input Gram invertible)": bool(first_ok),
                  "damping == 0": damping == 0, "C == 1": K.out_dim == 1}
    notes = [f"finite-width unit-wise, damping rho = {damping:.3g} (dual shift N rho)",
             f"active (unit, layer) pairs per sample: mean {counts.mean():.6g}, "
             f"min {counts.min():.6g}, max {counts.max():.6g}",
             f"infinite-width alpha gamma sum M / C + 1 = {predicted_alpha(K.network):.6g}"]
    alpha = float(counts.mean()) if K.out_dim == 1 else None
    return Operator("unit_wise", train, test, alpha, float(damping), K.out_dim, False,
                    conditions, tuple(notes))


def _infinite_operator(K, damping: float) -> Operator:
    net = K.network
    if damping != 0:
        raise ValueError("unit_wise on infinite-width kernels is the damping -> 0 limit only; "
                         "use finite-width (empirical) kernels for a damped unit-wise operator")
    alpha = predicted_alpha(net)
    first_ok = linalg.try_cholesky(np.asarray(K.fwd_train[0], float)) is not None
    conditions = {"N <= d (first-layer input Gram invertible)": bool(first_ok),
                  "infinite width (M -> infinity)": False}
    notes = [f"unit-wise from gamma = {net.gamma} and widths {net.widths}: G = alpha I holds only "
             "as M -> infinity; finite-width fluctuations ~ sqrt(M) are not modelled here",
             "no test operator on infinite-width kernels (needs per-unit finite-width kernels)"]
    if not first_ok:
        msg = ("unit-wise: the first-layer input Gram is singular (N > d): the operator is not "
               "diagonal at finite width; this infinite-width operator is then not justified")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    return Operator("unit_wise", alpha * np.eye(K.fwd_train.shape[1]), None, alpha, 0.0,
                    K.out_dim, K.kron_outputs, conditions, tuple(notes))
