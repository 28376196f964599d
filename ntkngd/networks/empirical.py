"""Finite-width (empirical) per-layer kernels of any network from its features, without Jacobians.

From `Network.features`: Theta_l[(n, c), (n', c')] = sum_{s, s'} <Ht_l[n, s], Ht_l[n', s']>
<D_l[(n, c), s], D_l[(n', c'), s']>; one position: (D_l D_l^T) o (Q_l (x) 1 1^T), several: that
or J_l, whichever is cheaper. Updates are one contraction, d[W_l; b_l] = sum_{n, s}
Ht_l[n, s]^T A_l[n, s] (`contract`); J_l^T v_l has A_l[n, s] = sum_c v_l[(n, c)] D_l[(n, c), s].
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .. import _checks
from .._lazy import LazyModule, lazy_jit
from .base import Network, param_dtype, traced
from .kernels import Kernels

jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")

_JAC_BYTES = 256 * 2 ** 20


def expand_outputs(q, c: int):
    """A kernel over samples, (N, N2) or (N, S, N2, S2), over (sample, output) pairs instead
    (Q (x) 1 1^T, sample-major): each sample axis (0 and ndim / 2) repeated C times."""
    return q if c == 1 else jnp.repeat(jnp.repeat(q, c, 0), c, q.ndim // 2)


def _layer_jacobian(ht, d):
    """J_l (m, k M): row (n, c) = vec(sum_s Ht[n, s]^T D[(n, c), s])."""
    n = ht.shape[0]
    j = jnp.einsum("nsk,ncse->ncke", ht, d.reshape(n, d.shape[0] // n, *d.shape[1:]))
    return j.reshape(d.shape[0], -1)


def layer_block(ht, d, ht2, d2):
    """(Theta_l(x, x2), Q summary (N, N2), B summary (m, m2)) of one layer (traceable; rows from
    ht, d): for one position the Hadamard form with the exact Q_l and D D^T; otherwise the cheaper
    of the spatial-Gram and per-layer-Jacobian forms, with the Grams averaged over positions."""
    n, s, k = ht.shape
    m, e = d.shape[0], d.shape[-1]
    if s == 1:
        c = m // n
        q, b = ht[:, 0] @ ht2[:, 0].T, d[:, 0] @ d2[:, 0].T
        return b * expand_outputs(q, c), q, b
    q_sum = jnp.einsum("ask,bsk->ab", ht, ht2) / s
    b_sum = jnp.einsum("ase,bse->ab", d, d2) / s
    jac_bytes = (m + d2.shape[0]) * k * e * ht.dtype.itemsize
    gram_cost = (n * s) * (ht2.shape[0] * s) * k + (m * s) * (d2.shape[0] * s) * (e + 1)
    jac_cost = m * s * k * e + m * d2.shape[0] * k * e
    form = jac_form if jac_bytes <= _JAC_BYTES and jac_cost < gram_cost else gram_form
    return form(ht, d, ht2, d2), q_sum, b_sum


def jac_form(ht, d, ht2, d2):
    """Theta(x, x2) = J_l(x) J_l(x2)^T from the per-layer Jacobians."""
    return _layer_jacobian(ht, d) @ _layer_jacobian(ht2, d2).T


def gram_form(ht, d, ht2, d2):
    """Theta(x, x2) = sum_{s, t} <Ht[n, s], Ht2[n', t]> <D[a, s], D2[b, t]> (spatial Grams)."""
    q = expand_outputs(jnp.einsum("ask,btk->asbt", ht, ht2), d.shape[0] // ht.shape[0])
    return jnp.einsum("asbt,asbt->ab", q, jnp.einsum("ase,bte->asbt", d, d2))


@lazy_jit
def _stacked(hts, ds, hts2, ds2):
    parts = [layer_block(*a) for a in zip(hts, ds, hts2, ds2)]
    return tuple(jnp.stack(v) for v in zip(*parts))


def from_features(net: Network, hts: Sequence, ds: Sequence, hts_test: Optional[Sequence] = None,
                  ds_test: Optional[Sequence] = None, input_dim: int = 0) -> Kernels:
    """Finite-width `Kernels` (kron_outputs=False) from features (traceable)."""
    blocks, qs, bs = _stacked(tuple(hts), tuple(ds), tuple(hts), tuple(ds))
    fields: dict[str, Any] = dict(
        blocks_train=blocks, fwd_train=qs, bwd_train=bs, out_dim=net.out_dim, kron_outputs=False,
        network=net, input_dim=input_dim, layer_inputs_train=tuple(hts),
        backprops_train=tuple(ds))
    if hts_test is not None:
        bt, qt, btt = _stacked(tuple(hts_test), tuple(ds_test), tuple(hts), tuple(ds))
        fields.update(blocks_test=bt, fwd_test=qt, bwd_test=btt,
                      layer_inputs_test=tuple(hts_test), backprops_test=tuple(ds_test))
    return Kernels(**fields)


def prepare(net: Network, params: Any, x: Any, name: str = "x_train", like: Any = None,
            check: Optional[bool] = None):
    """(params as a checked list, x as a device array in the parameters' dtype): host checks of
    both once (check None: unless traced; under a trace only the parameters' structure is read)."""
    params = net.check_params(params)
    return params, checked_inputs(net, params, x, name, like, check)


def checked_inputs(net: Network, params: list, x: Any, name: str = "x_test", like: Any = None,
                   check: Optional[bool] = None):
    """x as a device array in the dtype of `params` (already checked), its host check once
    (check None: unless traced)."""
    dtype = param_dtype(params)
    if check is None:
        check = not traced(params, x)
    if check:
        x = net.check_inputs(x, name, params, like, dtype=dtype)
    return jnp.asarray(x, dtype)


def kernels_and_outputs(net: Network, params: Any, x_train: Any,
                        x_test: Any = None) -> tuple[Kernels, Any]:
    """`empirical_kernels` and the training outputs f(X) (N, C) from the same pass."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntkngd Network (ntkngd.mlp, ntkngd.serial, ntkngd.cnn), "
                        f"got {type(net).__name__}")
    params, xtr = prepare(net, params, x_train)
    f, hts, ds = net.features(params, xtr)
    hts_t = ds_t = None
    if x_test is not None:
        xte = checked_inputs(net, params, x_test, "x_test", like=xtr)
        _, hts_t, ds_t = net.features(params, xte)
    K = from_features(net, hts, ds, hts_t, ds_t, input_dim=int(xtr[0].size))
    _checks.finite_kernels({k: getattr(K, k) for k in ("blocks_train", "fwd_train", "bwd_train",
                                                       "blocks_test", "fwd_test", "bwd_test")},
                           np.asarray(xtr).reshape(xtr.shape[0], -1))
    return K, f


def empirical_kernels(net: Network, params: Any, x_train: Any, x_test: Any = None) -> Kernels:
    """Per-layer kernels of the finite network `net` at `params` (from net.init_fn), in the
    parameters' dtype: a `Kernels` with `kron_outputs=False` (blocks (L, NC, NC), rows n C + c),
    with the patches Ht_l and backprops D_l the layer methods are built from."""
    return kernels_and_outputs(net, params, x_train, x_test)[0]


def outputs(net: Network, params: Any, x: Any):
    """Network outputs f(x) (N, C) at `params` (validated), in the parameters' dtype."""
    params, x = prepare(net, params, x, "x")
    return net.outputs(params, x)


@lazy_jit
def contract(hts: Sequence, signals: Sequence) -> tuple:
    """d[W_l; b_l] (k_l, M_l) = sum_{n, s} Ht_l[n, s]^T A_l[n, s] for signals A_l (N, S, M)."""
    return tuple(h.reshape(-1, h.shape[-1]).T @ a.reshape(-1, a.shape[-1]).astype(h.dtype)
                 for h, a in zip(hts, signals))


def dual_signals(ds: Sequence, vs: Sequence, out_dim: int) -> list:
    """A_l[n, s] = sum_c v_l[(n, c)] D_l[(n, c), s]: the signals whose contraction is J_l^T v_l
    (ds: backprops D_l (N C, S, M); vs: dual vectors v_l (N C,), sample-major)."""
    out = []
    for d, v in zip(ds, vs):
        n = d.shape[0] // out_dim
        vv = jnp.asarray(v).reshape(n, out_dim).astype(d.dtype)
        out.append(jnp.einsum("nc,ncsm->nsm", vv, d.reshape(n, out_dim, *d.shape[1:])))
    return out
