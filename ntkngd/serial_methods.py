"""Every method on a `SerialNetwork` (convolutions included): parameter-space directions, and the
function-space operators of K-FAC for convolutions (KFC) and channel-wise blocks at finite width.

GD / exact / BD / BTD / any block pattern: the operators come from the generic `Kernels` path
(`ntkngd.operator`); the update is d theta_l = J_l^T v_l with the same dual vectors v_l, formed from
the layer's patches and backprops (`pattern_update`: one matrix product, no Jacobian, no backward
pass), so J d = G g.

KFC (Grosse & Martens 2016): for layer l with patches Ht (N, S, k+1) and backprops D (N C, S, M),
    F_l ~ A (x) B,   A = sum_{n, s} Ht[n, s] Ht[n, s]^T / N,   B = sum_{(n, c), s} D D^T / (N S),
damped as (A + lam I) (x) (B + lam I), lam = sqrt(rho). With the spatial Grams
Q = Ht Ht^T (N S x N S) and Bs = D D^T (N C S x N C S), push-through gives
    G_l[(n, c), (n', c')] = N S sum_{s, s'} [Q (Q + N lam)^+]_{(n s), (n' s')}
                                            [Bs (Bs + N S lam)^+]_{((n c) s), ((n' c') s')},
and the update d[W_l; b_l] = Ht^T X D with X = N S (Q + N lam)^+ R (Bs + N S lam)^+,
R[(n s), ((n' c') s')] = delta_{n n'} delta_{s s'} g_{n' c'}. For Dense layers (S = 1) this is the
usual K-FAC.

Channel-wise (unit-wise for convolutions): one block per output channel o of each layer (its filter
and bias), Theta_{l, o} = sum_{s, s'} <Ht[n, s], Ht[n', s']> D[(n, c), s, o] D[(n', c'), s', o],
G = sum_{l, o} Theta_{l, o} (Theta_{l, o} + N rho)^+, update v_o = (Theta_{l, o} + N rho)^+ g.
Neither has an infinite-width theory; alpha is measured from the operator.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from .dynamics.linear import Operator
from .kernels import Kernels
from .losses import Loss, get_loss
from .methods import BlockPattern, Method, get_method
from .methods.unitwise import default_damping
from .serial_network import SerialNetwork
from .serial_empirical import serial_kernels_and_outputs

MethodLike = Union[str, BlockPattern, Method]


def _pinv_sym(gram: jnp.ndarray, shift: float) -> jnp.ndarray:
    """(gram + shift I)^+ for a symmetric PSD gram: eigenvalues below size * eps * max are cut
    when shift == 0."""
    w, u = jnp.linalg.eigh(0.5 * (gram + gram.T))
    if shift > 0:
        inv = 1.0 / (w + shift)
    else:
        cut = gram.shape[-1] * jnp.finfo(gram.dtype).eps * jnp.max(jnp.abs(w))
        inv = jnp.where(w > cut, 1.0 / jnp.where(w > cut, w, 1.0), 0.0)
    return (u * inv) @ u.T


def _expand(q: jnp.ndarray, c: int) -> jnp.ndarray:
    """(N, S, N2, S2) over samples -> over (sample, output) pairs, sample-major."""
    return q if c == 1 else jnp.repeat(jnp.repeat(q, c, 0), c, 2)


def _require_finite(K: Kernels, what: str) -> None:
    if K.kron_outputs or K.layer_inputs_train is None:
        raise ValueError(f"{what} on a serial network needs finite-width kernels "
                         "(ntkngd.empirical_kernels with parameters); it has no infinite-width "
                         "theory")


# ---------------------------------------------------------------- KFC
def _kfc_factors(ht, d, damping: float):
    n, s, _ = ht.shape
    lam = float(np.sqrt(damping))
    q = ht.reshape(n * s, -1) @ ht.reshape(n * s, -1).T
    bs = d.reshape(-1, d.shape[-1]) @ d.reshape(-1, d.shape[-1]).T
    return _pinv_sym(q, n * lam), _pinv_sym(bs, n * s * lam)


def _kfc_layer(ht, d, ht2, d2, qinv, binv) -> jnp.ndarray:
    n, s, _ = ht.shape
    c = d.shape[0] // n
    pq = (ht2.reshape(-1, ht2.shape[-1]) @ ht.reshape(n * s, -1).T) @ qinv
    pb = (d2.reshape(-1, d2.shape[-1]) @ d.reshape(-1, d.shape[-1]).T) @ binv
    pq = _expand(pq.reshape(ht2.shape[0], s, n, s), c)
    pb = pb.reshape(d2.shape[0], s, d.shape[0], s)
    return n * s * jnp.einsum("asbt,asbt->ab", pq, pb)


def kfc_operator(K: Kernels, damping: float = 0.0) -> Operator:
    """KFC's function-space operator on finite-width serial kernels (module docstring)."""
    _require_finite(K, "K-FAC (KFC)")
    hts, ds = K.layer_inputs_train, K.backprops_train
    train = test = 0.0
    for l in range(K.depth):
        qinv, binv = _kfc_factors(hts[l], ds[l], damping)
        train = train + _kfc_layer(hts[l], ds[l], hts[l], ds[l], qinv, binv)
        if K.has_test:
            test = test + _kfc_layer(hts[l], ds[l], K.layer_inputs_test[l],
                                     K.backprops_test[l], qinv, binv)
    notes = ("KFC (Grosse & Martens 2016): A sums patches over positions, B averages output "
             "gradients over positions; no infinite-width theory: alpha is measured",)
    return Operator("kfac", np.asarray(train, np.float64),
                    np.asarray(test, np.float64) if K.has_test else None, None, float(damping),
                    K.out_dim, False, {"damping == 0": damping == 0}, notes)


def kfc_update(ht, d, g: jnp.ndarray, damping: float) -> jnp.ndarray:
    """d[W; b] (k [+1], M) = (A + lam)^-1 grad (B + lam)^-1 through the dual form Ht^T X D."""
    n, s, _ = ht.shape
    qinv, binv = _kfc_factors(ht, d, damping)
    eye_n, eye_s = jnp.eye(n, dtype=g.dtype), jnp.eye(s, dtype=g.dtype)
    r = eye_n[:, None, :, None, None] * eye_s[None, :, None, None, :] * g[None, None, :, :, None]
    x = n * s * qinv @ r.reshape(n * s, -1) @ binv
    return ht.reshape(n * s, -1).T @ x @ d.reshape(-1, d.shape[-1])


# ---------------------------------------------------------------- channel-wise
def _channel_blocks(ht, d, ht2, d2) -> jnp.ndarray:
    """Theta_{l, o}(x2, x) for every output channel o: (M, m2, m)."""
    n, s, _ = ht.shape
    c = d.shape[0] // n
    qe = _expand(jnp.einsum("ask,btk->asbt", ht2, ht), c)       # (m2, S, m, S)
    return jax.lax.map(lambda o: jnp.einsum("as,asbt,bt->ab", d2[:, :, o], qe, d[:, :, o]),
                       jnp.arange(d.shape[-1]))


def _channel_inverses(ht, d, damping: float):
    blocks = _channel_blocks(ht, d, ht, d)
    shift = ht.shape[0] * damping
    return blocks, jax.lax.map(lambda b: _pinv_sym(b, shift), blocks)


def channel_wise_operator(K: Kernels, damping: Optional[float] = None) -> Operator:
    """Channel-wise operator G = sum_{l, o} Theta_{l, o} (Theta_{l, o} + N rho)^+ (and G')."""
    _require_finite(K, "channel-wise (unit-wise)")
    rho = default_damping(K) if damping is None else _checks.non_negative(damping, "damping")
    train = test = 0.0
    for l in range(K.depth):
        ht, d = K.layer_inputs_train[l], K.backprops_train[l]
        blocks, invs = _channel_inverses(ht, d, rho)
        train = train + jnp.einsum("oab,obc->ac", blocks, invs)
        if K.has_test:
            bt = _channel_blocks(ht, d, K.layer_inputs_test[l], K.backprops_test[l])
            test = test + jnp.einsum("oab,obc->ac", bt, invs)
    notes = (f"channel-wise (one block per output channel), damping rho = {rho:.3g} (dual shift "
             "N rho); no infinite-width theory: alpha is measured",)
    return Operator("unit_wise", np.asarray(train, np.float64),
                    np.asarray(test, np.float64) if K.has_test else None, None, rho,
                    K.out_dim, False, {"damping == 0": rho == 0}, notes)


def channel_update(ht, d, g: jnp.ndarray, damping: float) -> jnp.ndarray:
    """dW[k, o] = sum_{n, c, s} Ht[n, s, k] D[(n, c), s, o] v_o[(n, c)],
    v_o = (Theta_o + N rho)^+ g."""
    _, invs = _channel_inverses(ht, d, damping)
    v = invs @ g.reshape(-1)                                     # (M, m)
    return jnp.einsum("ask,aso,oa->ko", jnp.repeat(ht, d.shape[0] // ht.shape[0], 0), d, v)


# ---------------------------------------------------------------- dispatch
LAYER_METHODS = ("kfac", "unit_wise")   # layer-structured methods with a serial implementation


def _require_layer_method(m: Method) -> None:
    if m.name not in LAYER_METHODS:
        raise ValueError(f"method {m.name!r} (kind 'layer') has no implementation for serial "
                         f"networks; layer-structured methods there: {LAYER_METHODS} "
                         "(block-pattern methods work on any network through their dual vectors)")


def layer_operator(m: Method, K: Kernels, damping: float) -> Operator:
    """`ntkngd.operator` hook for kind-"layer" methods on serial kernels: kfac -> KFC,
    unit_wise -> channel-wise (finite width only)."""
    _require_layer_method(m)
    if m.name == "kfac":
        return kfc_operator(K, damping)
    return channel_wise_operator(K, damping)


def pattern_update(ht, d, v: jnp.ndarray) -> jnp.ndarray:
    """J_l^T v_l as the augmented d[W_l; b_l] (k [+1], M) from the patches and backprops:
    d[k, o] = sum_{n, s} Ht[n, s, k] E[n, s, o],  E[n, s, o] = sum_c D[(n, c), s, o] v[(n, c)]
    (one matrix product; no backward pass through the network)."""
    n, s, k = ht.shape
    c = d.shape[0] // n
    e = jnp.einsum("ncso,nc->nso", d.reshape(n, c, s, -1), v.reshape(n, c).astype(d.dtype))
    return ht.reshape(n * s, k).T @ e.reshape(n * s, -1)


def _from_augmented(params: list, net: SerialNetwork, dws: list) -> list:
    out = [() for _ in params]
    for l, i in enumerate(net.trainable):
        W, b = params[i]
        k = int(np.prod(W.shape[:-1]))
        dW = dws[l][:k].reshape(W.shape).astype(W.dtype)
        db = None if b is None else dws[l][k:].reshape(b.shape).astype(b.dtype)
        out[i] = (dW, db)
    return out


def direction(method: MethodLike, net: SerialNetwork, params: Any, x: Any, y: Any,
              damping: Optional[float] = None, loss: Union[str, Loss] = "mse",
              kernels_and_outputs: Optional[tuple] = None):
    """(direction pytree, Kernels, residual g, damping) of `method` at params; one step is
    params - lr * direction. gd / block patterns: the method's own dual vectors (`Method.duals`,
    the same system as `ntkngd.operator` on the same kernels) mapped by J_l^T; kfac /
    unit_wise: KFC / channel-wise updates (MSE only). damping None: the method's default.
    kernels_and_outputs: (K, f(X)) already computed at these params and x (saves a pass)."""
    m, L = get_method(method), get_loss(loss)
    K, f = kernels_and_outputs or serial_kernels_and_outputs(net, params, x)
    net.check_inputs(x)
    n, c = f.shape
    y = jnp.asarray(L.validate(y, "y_train", n, c), f.dtype)
    if damping is not None:
        damping = _checks.non_negative(damping, "damping")
    rho = float(m.resolve_damping(K, damping))
    g = L.residual(f, y)
    if m.update is not None:     # per-layer preconditioners (methods/_layers.py): any loss
        return _from_augmented(list(params), net, m.update(K, rho, f, y, L)), K, g, rho
    if m.kind == "layer":
        _require_layer_method(m)
        if not L.identity_hessian:
            raise ValueError(f"{m.name} on a serial network supports the MSE loss only")
        update = kfc_update if m.name == "kfac" else channel_update
        dws = [update(h, d, g, rho) for h, d in zip(K.layer_inputs_train, K.backprops_train)]
        return _from_augmented(list(params), net, dws), K, g, rho
    if m.duals is None:
        raise ValueError(f"method {m.name!r} defines no dual vectors (Method.duals): it cannot "
                         "update a serial network")
    vs = jnp.asarray(m.duals(K, rho, f, y, L), f.dtype).reshape(K.depth, n * c)
    dws = [pattern_update(h, d, v) for h, d, v in zip(K.layer_inputs_train, K.backprops_train, vs)]
    return _from_augmented(list(params), net, dws), K, g, rho
