"""Unit-wise Fisher: one block per unit i of layer l (its incoming weights and bias); channel-wise
on layers with several positions (one block per output channel).

Theta_{l,i} = D_i K_{l-1} D_i (D_i = diag(df/du_{l,i}(x_n))) makes G diagonal; as M -> infinity
G = alpha I, alpha = gamma sum_{l<L} M_l / C + 1 (gamma: fraction of active units) if every
K_{l-1} is invertible on the active sets (first layer: N <= d; docs/theory.md).
Finite width: unit i of layer l owns column i of [W_l; b_l], Theta_{l,i} = (d_i d_i^T) o
(Q_l (x) 1 1^T) with d_i = D_l[:, i]; with the dual shift s = N rho, v_{l,i} = (Theta_{l,i} +
s I)^+ g, d[W_l; b_l][:, i] = sum_(n,c) v_{l,i}[(n,c)] d_i[(n,c)] Ht_l[n] and G = sum_{l,i}
Theta_{l,i} (Theta_{l,i} + s I)^+ (G' likewise), in chunks of units. `default_damping(K)` serves
damping=None (at s = 0 nearly singular blocks give huge updates).
"""
from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from ..linalg import serial_blas
from ..dynamics.linear import Operator
from ..networks.empirical import expand_outputs
from ..networks.kernels import require_features
from . import _layers
from ._cache import first_layer_pd


def predicted_alpha(net) -> float:
    """The infinite-width alpha = gamma sum_l M_l / C + 1 of an MLP (module docstring)."""
    return float(net.gamma * sum(net.widths) / net.out_dim + 1.0)


_CHUNK_BYTES = 64 * 2 ** 20
DEFAULT_RELATIVE_DAMPING = 3e-4


def default_damping(K):
    """The one unit-wise damping rule: dual shift N rho = 3e-4 x the mean diagonal of a per-unit
    block, mean diag(Theta) / U (U = sum_l M_l units, hidden and output), i.e. rho = 3e-4 mean
    diag(Theta) / (U N): relative to the per-unit scale, it lowers alpha by the same 9% at every
    width (chosen in experiments/unitwise_damping.py; docs/theory.md). A float, or a traced
    scalar inside jax.jit (the jitted update resolves damping=None on device); 0 on
    infinite-width kernels (the damping -> 0 limit is the only case with a theory)."""
    if K.kron_outputs:
        return 0.0
    units = sum(K.network.widths) + K.network.out_dim
    val = DEFAULT_RELATIVE_DAMPING * jnp.mean(jnp.diagonal(K.ntk_train)) / (units * K.n_train)
    return val if isinstance(val, jax.core.Tracer) else float(val)


def _spatial_gram(ht, ht2, c: int):
    """Qe[a, s, b, t] = <Ht[n_a, s], Ht2[n_b, t]> over (sample, output) rows a, b: (m, S, m2, S)."""
    return expand_outputs(jnp.einsum("ask,btk->asbt", ht, ht2), c)


def _unit_blocks(qe, dl, dr):
    """Theta_{l,i}[a, b] = sum_{s, t} dl[a, s, i] Qe[a, s, b, t] dr[b, t, i] for a chunk of units
    (dl (m', S, k), dr (m, S, k), Qe (m', S, m, S)): (k, m', m). One position:
    (dl_i dr_i^T) o Qe."""
    if dl.shape[1] == 1:
        return dl[:, 0].T[:, :, None] * qe[None, :, 0, :, 0] * dr[:, 0].T[:, None, :]
    return jnp.einsum("asi,iasb->iab", dl, jnp.einsum("asbt,bti->iasb", qe, dr))


def _pinv_batch(theta: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Batched pseudo-inverses and range projectors of PSD blocks (k, m, m) (eigh, dtype rank
    cut `linalg.rank_rtol`)."""
    w, u, keep = linalg.kept_spectrum(linalg.symmetrized(theta))
    inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    ut = jnp.swapaxes(u, 1, 2)
    return (u * inv[:, None, :]) @ ut, (u * keep[:, None, :].astype(u.dtype)) @ ut


def _finite_operator(K, damping: float):
    """G, G' of the finite-width unit-wise Fisher (module docstring), jax.numpy in the kernels'
    dtype, in chunks of units (inactive units skipped)."""
    m, c, n = K.blocks_train.shape[1], K.out_dim, K.n_train
    shift = n * damping
    dtype = jnp.asarray(K.blocks_train).dtype
    train = jnp.zeros((m, m), dtype)
    test = jnp.zeros((K.blocks_test.shape[1], m), dtype) if K.has_test else None
    for l in range(K.depth):
        ht, d = K.layer_inputs_train[l], jnp.asarray(K.backprops_train[l])
        s = ht.shape[1]
        qe = _spatial_gram(ht, ht, c)
        active = np.flatnonzero(np.any(np.asarray(d) != 0, axis=(0, 1)))
        if test is not None:
            qt = _spatial_gram(K.layer_inputs_test[l], ht, c)
            dt = jnp.asarray(K.backprops_test[l])
        step = max(1, _CHUNK_BYTES // (dtype.itemsize * m * m * s))
        for idx in (active[i:i + step] for i in range(0, len(active), step)):
            tr, te = _chunk_terms(qe, d[..., idx], None if test is None else (qt, dt[..., idx]),
                                  jnp.asarray(shift, dtype), shift > 0)
            train = train + tr
            test = None if test is None else test + te
    return np.asarray(train), None if test is None else np.asarray(test)


@partial(jax.jit, static_argnums=4)
def _chunk_terms(qe, d, test_side, shift, damped: bool):
    """One chunk of units' terms of G (sum_i Theta_i (Theta_i + s)^-1, or the range projectors
    at s = 0) and of G' (sum_i Theta'_i (Theta_i + s)^-1, pseudo-inverse at s = 0), jitted."""
    theta = _unit_blocks(qe, d, d)
    if damped:
        theta_s = theta + shift * jnp.eye(theta.shape[-1], dtype=theta.dtype)
        inv = jnp.linalg.solve(theta_s, jnp.broadcast_to(jnp.eye(theta.shape[-1],
                                                                 dtype=theta.dtype), theta.shape))
        # Theta (Theta + s)^-1 = [(Theta + s)^-1 Theta]^T, solved directly: no cancellation at
        # large s (I - s (Theta + s)^-1 loses everything at rho = 1e4)
        train = jnp.swapaxes(jnp.linalg.solve(theta_s, theta), 1, 2).sum(0)
    else:
        inv, proj = _pinv_batch(theta)
        train = proj.sum(0)
    if test_side is None:
        return train, None
    qt, dt = test_side
    return train, jnp.einsum("kab,kbc->ac", _unit_blocks(qt, dt, d), inv)


def active_counts(K) -> np.ndarray:
    """Per sample n: the number of (unit, layer) pairs with a non-zero derivative on x_n
    (any output) -- the diagonal of the undamped unit-wise G for C = 1 (docs/theory.md)."""
    n, c = K.n_train, K.out_dim
    return sum(np.any(np.asarray(d).reshape(n, c, -1) != 0, axis=1).sum(1)
               for d in K.backprops_train).astype(float)   # one position: (N C, 1, M)


def signals(K, damping, f, y, loss) -> list:
    """Per-layer signals A_l (N, S, M_l) of the unit-wise update for any loss (jax.numpy,
    jittable): column i of [W_l; b_l] gets Ht_l^T A_l[..., i]. One position: with d_ni =
    D_l[(n, :), i], h_ni = d_ni^T H_n d_ni and a_ni = d_ni . r_n, per unit
    (N rho I + diag(h_i) Q_l) A_l[:, i] = a_i, solved as A_i = sqrt(h_i) o w_i with the SPD
    M_i = N rho I + diag(sqrt h_i) Q_l diag(sqrt h_i), M_i w_i = a_i / sqrt(h_i) (`_damped_units`;
    rho = 0, MSE only: M_i^+, `_pinv_units`). Several positions: `_channel_signals`."""
    require_features(K, "a unit-wise parameter-space update")
    positive = isinstance(damping, jax.core.Tracer) or damping > 0   # traced: the default > 0
    if not positive and not loss.identity_hessian:
        raise ValueError(f"unit-wise with the {loss.name} loss needs damping > 0 (the per-unit "
                         "blocks H Theta_li are singular; pass damping=None for the default "
                         "unitwise.default_damping)")
    n, c = K.n_train, K.out_dim
    r = loss.residual(f, y)
    H = None if loss.identity_hessian else loss.hessian(f)
    out = []
    for q, ht, dl in zip(K.fwd_train, K.layer_inputs_train, K.backprops_train):
        if ht.shape[1] > 1:
            out.append(_channel_signals(ht, dl, loss, f, y, n * damping, positive))
            continue
        d = dl.reshape(n, c, -1)
        a = jnp.einsum("nc,nci->in", r.astype(d.dtype), d)                    # (M, N)
        h = jnp.sum(d * d, 1).T if H is None else \
            jnp.einsum("nci,ncd,ndi->in", d, H.astype(d.dtype), d)
        units = _damped_units(q, h, a, n * damping) if positive else _pinv_units(q, h, a)
        out.append(units[:, None, :])
    return out


def _channel_signals(ht, d, loss, f, y, shift, positive: bool):
    """Signals (N, S, M) of one layer with several positions: per channel o, with
    Theta_o = sum_{s, t} <Ht_s, Ht_t> D_s[:, o] D_t[:, o]^T (N C x N C), R = blockdiag(H_n^{1/2})
    and x = H^+ r (MSE: R = I, x = r), v_o = R (R Theta_o R + s I)^+ R x, so that
    (H Theta_o + s) v_o = r, and A[n, s, o] = sum_c D[(n, c), s, o] v_o[(n, c)]; chunks of
    channels (lax.map), Cholesky when s > 0, else the pseudo-inverse (dtype rank cut)."""
    n, c = f.shape
    m, k = d.shape[0], d.shape[-1]
    qe = _spatial_gram(ht, ht, c)
    x = loss.pinv_residual(f, y).astype(d.dtype).reshape(-1)
    root = _layers.hessian_root(loss, f)
    rmat = None if root is None else _layers.block_diag(root.astype(d.dtype))
    rhs = x if rmat is None else rmat @ x
    pad = (-k) % _UNIT_CHUNK
    cols = jnp.moveaxis(jnp.pad(d, ((0, 0), (0, 0), (0, pad))).reshape(m, d.shape[1], -1,
                                                                        _UNIT_CHUNK), 2, 0)

    def chunk(dc):
        theta = _unit_blocks(qe, dc, dc)
        if rmat is not None:
            theta = rmat @ theta @ rmat
        if positive:
            w = jax.scipy.linalg.cho_solve(
                (linalg.cholesky_symmetric(linalg.symmetrized(theta)
                                           + shift * jnp.eye(m, dtype=d.dtype)), True),
                jnp.broadcast_to(rhs[:, None], (dc.shape[-1], m, 1)))[..., 0]
        else:
            w = _pinv_batch(theta)[0] @ rhs
        v = w if rmat is None else w @ rmat.T
        return jnp.einsum("asi,ia->asi", dc, v).reshape(n, c, d.shape[1], -1).sum(1)

    out = jax.lax.map(chunk, cols)                                      # (chunks, N, S, chunk)
    return jnp.moveaxis(out, 0, 2).reshape(n, d.shape[1], -1)[..., :k]


_UNIT_CHUNK = 64
_BUCKETS = 8            # active-set sizes ceil(j N / 8), j = 1..8
_BUCKET_MIN_N = 48      # below this every unit is solved at full size N


def _active_sizes(n: int) -> list:
    """The static system sizes a chunk of units may be solved at (ascending, the last one N)."""
    return [n] if n < _BUCKET_MIN_N else \
        sorted({max(1, -(-j * n // _BUCKETS)) for j in range(1, _BUCKETS + 1)})


def _solve_active(b: int, q, hh, aa, idx, pos, shift):
    """One chunk of units (`_damped_units`), solved on each unit's first b samples in `idx` (its
    active ones first; b = N: all, in order) and put back in sample order by `pos`. Samples with
    h = 0 decouple exactly (rows s I, right-hand side 0). Returns (N, chunk)."""
    n = hh.shape[1]
    if b < n:
        sel = idx[:, :b]
        hh, aa = jnp.take_along_axis(hh, sel, 1), jnp.take_along_axis(aa, sel, 1)
        q = jnp.take_along_axis(q[sel], sel[:, None, :], 2)             # rows, then columns
    sh = jnp.sqrt(jnp.clip(hh, 0.0, None))
    rhs = jnp.where(sh > 0, aa / jnp.where(sh > 0, sh, 1.0), 0.0)
    # the factor of [M, rhs; rhs^T, beta] ends in the row (M's factor^{-1} rhs)^T: one triangular
    # solve less; beta > rhs^T M^{-1} rhs (M >= s I) keeps it positive definite
    r2 = jnp.sum(rhs * rhs, 1)
    beta = jnp.where(r2 > 0, 2.0 * r2 / shift, 0.0) + 1.0
    m = sh[:, :, None] * q * sh[:, None, :] + shift * jnp.eye(b, dtype=q.dtype)
    c = linalg.cholesky_symmetric(jnp.block([[m, rhs[:, :, None]],
                                             [rhs[:, None, :], beta[:, None, None]]]))
    z = c[:, b, :, None] * (jnp.arange(b + 1) < b)[:, None]          # [M's factor^{-1} rhs; 0]
    w = jax.lax.linalg.triangular_solve(c, z, left_side=True, lower=True, transpose_a=True)
    out = sh * w[:, :b, 0]
    if b < n:          # back to sample order; place b holds the 0 of the dropped samples
        out = jnp.take_along_axis(jnp.pad(out, ((0, 0), (0, 1))), jnp.minimum(pos, b), 1)
    return out.T


def _damped_units(q, h, a, shift):
    """Per unit (rows of h, a): A = sqrt(h) o w with (s I + diag(sqrt h) Q diag(sqrt h)) w =
    a / sqrt(h) (Cholesky), in chunks of units (lax.map) that stay in cache. A unit couples only
    its active samples (h > 0; about half for ReLU): for N >= _BUCKET_MIN_N units are sorted by
    active count and each chunk is solved at the smallest of `_active_sizes` holding its largest
    active set (lax.switch). Returns A as (N, units), so that Ht^T A is one plain product."""
    k, n = h.shape
    q = linalg.symmetrized(q)
    sizes = _active_sizes(n)
    if len(sizes) == 1:
        order = idx = pos = None
        parts = (h, a)
    else:
        active = h > 0
        order = jnp.argsort(active.sum(1))                               # units by active count
        act = active[order]
        # each sample's place when a unit's active samples come first (both parts in order)
        pos = jnp.where(act, jnp.cumsum(act, 1) - 1,
                        act.sum(1, keepdims=True) + jnp.cumsum(~act, 1) - 1).astype(jnp.int32)
        idx = jnp.zeros((k, n), jnp.int32).at[jnp.arange(k)[:, None], pos].set(
            jnp.arange(n, dtype=jnp.int32)[None])
        parts = (h[order], a[order], idx, pos)
    pad = (-k) % _UNIT_CHUNK
    chunked = tuple(jnp.pad(v, ((0, pad), (0, 0))).reshape(-1, _UNIT_CHUNK, n) for v in parts)

    def chunk(args):
        if len(sizes) == 1:
            return _solve_active(n, q, *args, None, None, shift)
        branches = [lambda *xs, b=b: _solve_active(b, q, *xs, shift) for b in sizes]
        need = jnp.max(jnp.sum(args[0] > 0, axis=1))
        return jax.lax.switch(jnp.searchsorted(jnp.asarray(sizes), need), branches, *args)

    out = jax.lax.map(chunk, chunked)                                    # (chunks, N, chunk)
    cols = jnp.moveaxis(out, 0, 1).reshape(n, -1)[:, :k]
    if order is None:
        return cols
    # back to unit order with an elementwise gather: a column gather (cols[:, inverse]) makes XLA
    # compute the wide update transposed and copy it (64 MB per 4096 x 4096 layer per step)
    inverse = jnp.argsort(order)
    return jnp.take_along_axis(cols, jnp.broadcast_to(inverse[None], cols.shape), 1)


def _pinv_units(q, h, a):
    """sqrt(h) o (sqrt(h) Q sqrt(h))^+ (a / sqrt(h)) per unit (rows of h, a), dtype rank cut;
    returned as (N, units) like `_damped_units`."""
    sh = jnp.sqrt(h)
    inv = _pinv_batch(sh[:, :, None] * q[None] * sh[:, None, :])[0]
    rhs = jnp.where(sh > 0, a / jnp.where(sh > 0, sh, 1.0), 0.0)
    return sh.T * jnp.einsum("kij,kj->ik", inv, rhs)


@serial_blas()
def operator(K, damping: float = 0.0) -> Operator:
    """G (and G') of the unit-wise Fisher: finite-width or infinite-width (module docstring)."""
    return _infinite_operator(K, damping) if K.kron_outputs else _empirical_operator(K, damping)


def _empirical_operator(K, damping: float) -> Operator:
    require_features(K, "the finite-width unit-wise operator")
    train, test = _finite_operator(K, damping)
    if any(s > 1 for s in K.positions):
        return Operator("unit_wise", train, test, None, float(damping), K.out_dim, False,
                        {"damping == 0": damping == 0},
                        (f"channel-wise (one block per output channel), damping rho = "
                         f"{damping:.3g} (dual shift N rho); no infinite-width theory: alpha is "
                         "measured",))
    counts = active_counts(K)
    conditions = {"N <= d (first-layer input Gram invertible)": bool(first_layer_pd(K)),
                  "damping == 0": damping == 0, "C == 1": K.out_dim == 1}
    notes = [f"finite-width unit-wise, damping rho = {damping:.3g} (dual shift N rho)",
             f"active (unit, layer) pairs per sample: mean {counts.mean():.6g}, "
             f"min {counts.min():.6g}, max {counts.max():.6g}",
             f"infinite-width alpha gamma sum M / C + 1 = {predicted_alpha(K.network):.6g}"
             if K.network.gamma is not None else "no infinite-width alpha for this network"]
    alpha = float(counts.mean()) if K.out_dim == 1 else None
    return Operator("unit_wise", train, test, alpha, float(damping), K.out_dim, False,
                    conditions, tuple(notes))


def _infinite_operator(K, damping: float) -> Operator:
    net = K.network
    if net.gamma is None or K.bwd_train is None:
        raise ValueError("unit_wise at infinite width is derived for MLPs (gamma and the widths); "
                         "for this network use finite-width (empirical) kernels")
    if damping != 0:
        raise ValueError("unit_wise on infinite-width kernels is the damping -> 0 limit only; "
                         "use finite-width (empirical) kernels for a damped unit-wise operator")
    alpha = predicted_alpha(net)
    first_ok = first_layer_pd(K)
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
