"""Diagonal Fisher (the Adam family's preconditioner): P = (diag F + rho)^-1, the pseudo-inverse on
zero entries at rho = 0 (`_layers.inverse_scales`). Per layer (`_layers`: h, delta)
    diag F_l[k, m] = (1/N) sum_(n,c) (sum_s h[n,s,k] (H_n^{1/2} delta)[n,c,s,m])^2,
    d[W_l; b_l] = G_l / (diag F_l + rho),          G_l = J_l^T r / N,
and G = sum_l J_l P_l J_l^T / N (MSE). At rho = 0 tr G = #{diag F > 0}: alpha grows like width^2.

Wide limit (MLP, C = 1, rho = 0; docs/theory.md): G_l / (M_{l-1} M_l) -> E[h h^T o delta
delta^T / |h o delta|^2], estimated by Monte Carlo with its standard error (`wide_limit`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..dynamics.linear import Operator
from . import _layers


def update(K, damping, f, y, loss) -> list:
    """Per-layer directions d[W_l; b_l] = G_l / (diag F_l + rho) (jax.numpy, jittable)."""
    r = loss.residual(f, y)
    root = _layers.hessian_root(loss, f)
    out = []
    for h, d in _layers.layers(K):
        g = _layers.gradient(h, d, r)
        p = _layers.inverse_scales(_layers.diag_fisher(h, _layers.rooted(d, root)), damping)
        out.append(g * p)
    return out


signals = _layers.no_signals("the diagonal Fisher's")


def operator(K, damping: float = 0.0) -> Operator:
    """MSE function-space operator: finite width G = sum_l J_l P_l J_l^T / N (and G'); on
    infinite-width MLP kernels the Monte-Carlo wide limit (`wide_limit`, training side only)."""
    if not K.has_features:
        return limit_operator(K, damping)
    layers = _layers.layers(K)
    tests = _layers.layers(K, test=True) if K.has_test else [(None, None)] * len(layers)
    train, test, count = _layers.preconditioned_grams(
        ((h, d, ht, dt) for (h, d), (ht, dt) in zip(layers, tests)), damping)
    m = K.n_train * K.out_dim
    notes = [f"diagonal Fisher: {count} parameters with diag F > 0; at rho = 0 tr G = that "
             f"count, alpha = {count / m:.6g} (= count / (N C), grows like width^2)",
             "no isotropy is predicted: the wide limit is E_l (methods.diagonal.wide_limit)"]
    return Operator("diagonal", np.asarray(train), None if test is None else np.asarray(test),
                    None, float(damping), K.out_dim, False, {"damping == 0": damping == 0},
                    tuple(notes))


# ---------------------------------------------------------------- wide limit (Monte Carlo)
def _gauss_root(cov: np.ndarray) -> np.ndarray:
    """A square root R (R R^T = cov) of a PSD covariance (eigh, negative round-off clipped)."""
    w, u = np.linalg.eigh(0.5 * (cov + cov.T))
    return u * np.sqrt(np.clip(w, 0.0, None))


def _ratio_mean(h: np.ndarray, a: np.ndarray):
    """Mean and standard error over samples of (h o a)(h o a)^T / |h o a|^2 (0 where h o a = 0):
    h, a (S, N) -> (N, N), (N, N); both moments as matrix products."""
    z = h * a
    den = np.sum(z * z, axis=1)
    z = np.where((den > 0)[:, None], z / np.sqrt(np.where(den > 0, den, 1.0))[:, None], 0.0)
    s = z.shape[0]
    mean = z.T @ z / s
    var = np.clip((z * z).T @ (z * z) / s - mean ** 2, 0.0, None)
    return mean, np.sqrt(var / (s - 1))


def _phi_and_derivative(phi, u: np.ndarray):
    """phi(u) and phi'(u) (float64) of an elementwise activation (forward-mode autodiff)."""
    val, dval = jax.jvp(phi, (jnp.asarray(u),), (jnp.ones_like(jnp.asarray(u)),))
    return np.asarray(val, np.float64), np.asarray(dval, np.float64)


def wide_limit(K, samples: int = 20000, seed: int = 0) -> dict:
    """Monte-Carlo wide-limit matrices of the diagonal Fisher on infinite-width MLP kernels (C = 1):
    one E_t (N x N) per kind of weight (first layer; then per layer its weights [and bias]), so
    that G ~ sum_t c_t E_t (`limit_counts`); independent of the widths. The first layer averages its
    fixed inputs exactly. Returns {"E": (T, N, N), "stderr": (T, N, N), "counts", "samples"}."""
    net = K.network
    if not K.kron_outputs:
        raise ValueError("the diagonal Fisher's wide limit needs infinite-width kernels "
                         "(ntkngd.analytic_kernels)")
    phi = net.hidden_activation()
    if phi is None or K.bwd_train is None or K.first_inputs_train is None:
        raise ValueError("the diagonal Fisher's wide limit is derived for MLPs (ntkngd.mlp: "
                         "per-layer forward and backward kernels, fixed first-layer inputs, "
                         "the hidden activation: Network.hidden_activation)")
    if K.out_dim != 1:
        raise ValueError(f"the diagonal Fisher's wide limit is derived for C = 1 (out_dim = "
                         f"{K.out_dim}): with C > 1 the per-weight entry mixes the outputs")
    fwd = np.asarray(K.fwd_train, np.float64)
    bwd = np.asarray(K.bwd_train, np.float64)
    L, n = K.depth, K.n_train
    rs = np.random.RandomState(seed)
    E, err = [], []
    for l in range(L):                                   # layer l + 1 in 1-based terms
        if l < L - 1:     # delta = phi'(v) o g, v ~ N(0, Q_l), g ~ N(0, W_std^2 B_{l+1})
            v = rs.randn(samples, n) @ _gauss_root(fwd[l]).T
            g = rs.randn(samples, n) @ _gauss_root(net.W_std ** 2 * bwd[l + 1]).T
            a = _phi_and_derivative(phi, v)[1] * g
        else:             # the output layer: delta = 1
            a = np.ones((samples, n))
        if l == 0:        # fixed input coordinates (bias column included)
            parts = [_ratio_mean(np.broadcast_to(col, (samples, n)), a)
                     for col in np.asarray(K.first_inputs_train, np.float64).T]
            E.append(np.mean([p[0] for p in parts], axis=0))
            err.append(np.mean([p[1] for p in parts], axis=0))   # a bound (shared delta)
            continue
        u = rs.randn(samples, n) @ _gauss_root(fwd[l - 1]).T     # h = phi(u), u ~ N(0, Q_{l-1})
        for mean, se in [_ratio_mean(_phi_and_derivative(phi, u)[0], a)] + \
                ([_ratio_mean(np.ones((samples, n)), a)] if net.has_bias else []):
            E.append(mean)
            err.append(se)
    return {"E": np.stack(E), "stderr": np.stack(err),
            "counts": limit_counts(net, K.input_dim), "samples": samples}


def limit_counts(net, input_dim: int) -> np.ndarray:
    """c_t, the number of weights of each term of `wide_limit`: (d [+1]) M_1 for the first layer,
    then per layer l > 1 M_{l-1} M_l weights [and M_l biases]."""
    widths = (input_dim,) + tuple(net.widths) + (net.out_dim,)
    b = 1 if net.has_bias else 0
    out = [(widths[0] + b) * widths[1]]
    for l in range(1, net.depth):
        out.append(widths[l] * widths[l + 1])
        if b:
            out.append(widths[l + 1])
    return np.asarray(out, float)


def combine(lim: dict, counts) -> tuple[np.ndarray, float]:
    """(G = sum_l c_l E_l, the standard error of G / alpha (Frobenius / sqrt(N))) from a
    `wide_limit` result and per-layer counts c_l (`limit_counts`): the E_l do not depend on the
    widths, so one Monte-Carlo run serves every width."""
    counts = np.asarray(counts, float)
    train = np.einsum("l,lab->ab", counts, lim["E"])
    n = train.shape[0]
    alpha = float(np.trace(train) / n)
    err = float(np.linalg.norm(np.einsum("l,lab->ab", counts, lim["stderr"]))
                / (alpha * np.sqrt(n)))
    return train, err


def limit_operator(K, damping: float = 0.0, samples: int = 20000, seed: int = 0) -> Operator:
    """The wide-limit operator G = sum_l c_l E_l (training points; C = 1; rho = 0) from
    `wide_limit` on infinite-width MLP kernels, with the Monte-Carlo error in its notes."""
    if damping != 0:
        raise ValueError("the diagonal Fisher's wide limit is the damping -> 0 operator (its "
                         "entries shrink like 1/width^2, so a fixed damping dominates as the "
                         "width grows); pass damping=0 or finite-width (empirical) kernels")
    lim = wide_limit(K, samples, seed)
    train, err = combine(lim, lim["counts"])
    alpha = float(np.trace(train) / K.n_train)
    notes = (f"Monte-Carlo wide limit ({samples} samples, seed {seed}): G = sum_l c_l E_l, "
             f"standard error of G / alpha: {err:.2g} (Frobenius / sqrt(N))",
             "no test operator (needs the joint test-test kernels)")
    return Operator("diagonal", train, None, alpha, 0.0,
                    K.out_dim, K.kron_outputs, {"damping == 0": True, "C == 1": K.out_dim == 1},
                    notes)
