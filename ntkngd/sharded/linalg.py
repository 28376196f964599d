"""Distributed dense linear algebra on row-sharded matrices (shard_map over the mesh axis).

A (Np x Np) is split into P row blocks of b = Np / P rows, device p holding rows [p b, (p+1) b).

cholesky: right-looking block Cholesky A = L L^T. Step k broadcasts the diagonal block A_kk
    (psum of one device's block), every device factors it (b^3 / 3 flops, the same bits
    everywhere), devices p > k form their panel L_pk = A_pk L_kk^{-T}, the panel column is
    all-gathered (Np x b: the largest message, never a full block) and the trailing rows are
    updated, A_pj -= L_pk L_jk^T (j > k). Flops ~ Np^3 / (2P) per device (the triangular half
    of each update is not skipped), L kept row-sharded in the compute dtype.
solve / solve_rows: (L L^T)^{-1} R by block forward and back substitution for a small replicated
    R (Np x k) or a row-sharded R (Np x M, many columns: one b x M block broadcast per step).
matvec / rmatvec: A v (A row-sharded, v replicated) and A^T v (A's rows index v).
The stored matrices may be narrower (float32) than the compute dtype: each block is converted to
it before use, so every sum accumulates in the compute dtype.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from . import mesh as meshes


def _jax():
    import jax
    import jax.numpy as jnp
    from jax.experimental.shard_map import shard_map
    return jax, jnp, shard_map


def _specs():
    from jax.sharding import PartitionSpec as P
    return P(meshes.AXIS, None), P()


@functools.lru_cache(maxsize=None)
def _hadamard(dtype: str):
    jax, _, _ = _jax()
    return jax.jit(lambda a, b: a.astype(dtype) if b is None else a.astype(dtype) * b.astype(dtype))


def hadamard(a, b, dtype):
    """a o b (b None: a) in `dtype`, keeping a's row sharding."""
    return _hadamard(np.dtype(dtype).name)(a, b)


@functools.lru_cache(maxsize=None)
def _ops(mesh, cdt: str):
    """The jitted shard_map programs for one mesh and compute dtype."""
    jax, jnp, shard_map = _jax()
    lax = jax.lax
    ax = meshes.AXIS
    P = int(mesh.devices.size)
    rows, rep = _specs()
    tri = lax.linalg.triangular_solve

    def cast(a):
        return a.astype(cdt)

    def only(p, k, x):
        """x from device k, broadcast to all (psum of one non-zero term)."""
        return lax.psum(jnp.where(p == k, x, jnp.zeros_like(x)), ax)

    def shifted(a, shift):
        p = lax.axis_index(ax)
        b, n = a.shape
        diag = (jnp.arange(n)[None, :] == (p * b + jnp.arange(b))[:, None])
        return chol_body(cast(a) + shift.astype(cdt) * diag)

    def chol_body(a):       # in place: column block k of `a` becomes L's once factored
        p = lax.axis_index(ax)
        a = cast(a)
        b, n = a.shape
        for k in range(P):
            cols = slice(k * b, (k + 1) * b)
            lkk = lax.linalg.cholesky(only(p, k, a[:, cols]), symmetrize_input=False)
            x = tri(lkk, a[:, cols], left_side=False, lower=True, transpose_a=True)
            panel = jnp.where(p > k, x, jnp.where(p == k, lkk, jnp.zeros_like(x)))
            a = a.at[:, cols].set(panel)
            if k + 1 < P:
                col = lax.all_gather(panel, ax, tiled=True)           # (Np, b)
                upd = panel @ col[(k + 1) * b:].T
                a = a.at[:, (k + 1) * b:].add(-jnp.where(p > k, upd, jnp.zeros_like(upd)))
        d = lax.dynamic_slice_in_dim(a, p * b, b, axis=1)
        return a, lax.all_gather(jnp.diagonal(d), ax, tiled=True)

    def solve_body(l, r):
        p = lax.axis_index(ax)
        b = l.shape[0]
        y = jnp.zeros_like(r)
        for k in range(P):
            cols = slice(k * b, (k + 1) * b)
            rhs = r[cols] - l[:, :k * b] @ y[:k * b] if k else r[cols]
            y = y.at[cols].set(only(p, k, tri(l[:, cols], rhs, left_side=True, lower=True)))
        x = jnp.zeros_like(y)
        for k in reversed(range(P)):
            cols = slice(k * b, (k + 1) * b)
            mine = lax.dynamic_slice_in_dim(x, p * b, b, axis=0)
            s = lax.psum(jnp.where(p > k, l[:, cols].T @ mine, jnp.zeros_like(r[cols])), ax)
            xk = tri(l[:, cols], y[cols] - s, left_side=True, lower=True, transpose_a=True)
            x = x.at[cols].set(only(p, k, xk))
        return x

    def solve_rows_body(l, r):
        p = lax.axis_index(ax)
        b = l.shape[0]
        r = cast(r)
        y = jnp.zeros_like(r)
        for k in range(P):
            cols = slice(k * b, (k + 1) * b)
            yk = only(p, k, tri(l[:, cols], r, left_side=True, lower=True))
            y = jnp.where(p == k, yk, y)
            if k + 1 < P:
                r = r - jnp.where(p > k, l[:, cols] @ yk, jnp.zeros_like(r))
        x = jnp.zeros_like(y)
        for k in reversed(range(P)):
            cols = slice(k * b, (k + 1) * b)
            s = lax.psum(jnp.where(p > k, l[:, cols].T @ x, jnp.zeros_like(x)), ax)
            xk = tri(l[:, cols], y - s, left_side=True, lower=True, transpose_a=True)
            x = jnp.where(p == k, xk, x)
        return x

    def matvec_body(a, v):
        return lax.all_gather(cast(a) @ v, ax, tiled=True)

    def rmatvec_body(a, v):
        p = lax.axis_index(ax)
        mine = lax.dynamic_slice_in_dim(v, p * a.shape[0], a.shape[0], axis=0)
        return lax.psum(cast(a).T @ mine, ax)

    def sums_body(a):
        p = lax.axis_index(ax)
        a = cast(a)
        d = jnp.diagonal(lax.dynamic_slice_in_dim(a, p * a.shape[0], a.shape[0], axis=1))
        return lax.psum(jnp.sum(d), ax), lax.psum(jnp.sum(a * a), ax)

    def sm(f, i, o, donate=()):
        return jax.jit(shard_map(f, mesh=mesh, in_specs=i, out_specs=o, check_rep=False),
                       donate_argnums=donate)

    return {"chol": sm(chol_body, (rows,), (rows, rep)),
            "chol_donate": sm(chol_body, (rows,), (rows, rep), donate=(0,)),
            "chol_shift": sm(shifted, (rows, rep), (rows, rep)),
            "solve": sm(solve_body, (rows, rep), rep),
            "solve_rows": sm(solve_rows_body, (rows, rows), rows),
            "matvec": sm(matvec_body, (rows, rep), rep),
            "rmatvec": sm(rmatvec_body, (rows, rep), rep),
            "sums": sm(sums_body, (rows,), (rep, rep))}


class Factor:
    """A row-sharded Cholesky factor L (A + shift I = L L^T) and its diagonal (host array)."""

    def __init__(self, l, diag: np.ndarray, n: int):
        self.l, self.diag, self.n = l, diag, n

    def is_pd(self, rtol: float) -> bool:
        """The dense path's test (`ntkngd.linalg.factor_is_pd`) on the real points: finite and
        min |L_ii| > sqrt(rtol) max |L_ii|, i.e. condition number below ~1/rtol."""
        d = np.abs(self.diag[:self.n])
        return bool(np.all(np.isfinite(d)) and d.min() > np.sqrt(rtol) * d.max())


def _mesh_of(a):
    return a.sharding.mesh


def cholesky(a, cdt, shift: float = 0.0, donate: bool = False) -> tuple:
    """(row-sharded L, its diagonal as a host array) with L L^T = a + shift I, in dtype cdt.
    donate: `a` is a temporary in dtype cdt, factored in its own buffer (not usable after)."""
    ops = _ops(_mesh_of(a), np.dtype(cdt).name)
    if shift == 0:
        l, d = ops["chol_donate" if donate and a.dtype == np.dtype(cdt) else "chol"](a)
    else:
        l, d = ops["chol_shift"](a, meshes.put_replicated(np.asarray(shift, cdt), _mesh_of(a)))
    return l, meshes.to_host(d)


COLUMNS = 16      # host right-hand sides are padded to a multiple of this: one program each


def _columns(v: np.ndarray) -> tuple[np.ndarray, int]:
    """v (n, k) with zero columns up to a multiple of COLUMNS (so that Lanczos' single vectors
    and C-column residuals share one compiled program), and k."""
    v = np.asarray(v)
    k = v.shape[1]
    pad = -k % COLUMNS
    return (np.concatenate([v, np.zeros((v.shape[0], pad), v.dtype)], 1) if pad else v), k


def solve(l, r: np.ndarray) -> np.ndarray:
    """(L L^T)^{-1} r for a host r (Np, k): block substitution, replicated right-hand side."""
    mesh = _mesh_of(l)
    ops = _ops(mesh, np.dtype(l.dtype).name)
    r, k = _columns(r)
    return meshes.to_host(ops["solve"](l, meshes.put_replicated(r, mesh, l.dtype)))[:, :k]


def solve_rows(l, r):
    """(L L^T)^{-1} r for a row-sharded r (Np, M): stays row-sharded, never gathered."""
    return _ops(_mesh_of(l), np.dtype(l.dtype).name)["solve_rows"](l, r)


def matvec(a, v: np.ndarray, cdt) -> np.ndarray:
    """a @ v for row-sharded a (Np, Np) and host v (Np, k), accumulated in cdt."""
    mesh = _mesh_of(a)
    v, k = _columns(v)
    return meshes.to_host(_ops(mesh, np.dtype(cdt).name)["matvec"](
        a, meshes.put_replicated(v, mesh, cdt)))[:, :k]


def rmatvec(a, v: np.ndarray, cdt) -> np.ndarray:
    """a^T @ v for row-sharded a (Np, M) and host v (Np, k) -> (M, k), accumulated in cdt."""
    mesh = _mesh_of(a)
    v, k = _columns(v)
    return meshes.to_host(_ops(mesh, np.dtype(cdt).name)["rmatvec"](
        a, meshes.put_replicated(v, mesh, cdt)))[:, :k]


def trace_and_frobenius2(a, cdt) -> tuple[float, float]:
    """(tr a, ||a||_F^2) of a row-sharded square matrix, accumulated in cdt."""
    t, f = _ops(_mesh_of(a), np.dtype(cdt).name)["sums"](a)
    return float(meshes.to_host(t)), float(meshes.to_host(f))


def pad_rows(v: np.ndarray, n_pad: int) -> np.ndarray:
    """v (N, k) with zero ghost rows up to Np."""
    v = np.asarray(v)
    return v if v.shape[0] == n_pad else np.concatenate(
        [v, np.zeros((n_pad - v.shape[0],) + v.shape[1:], v.dtype)])


def rows_from_host(x: np.ndarray, mesh, dtype: Any):
    """A host array (Np, M) as a row-sharded global array (each process places its own rows)."""
    import jax
    a = np.asarray(x, dtype)
    return jax.make_array_from_callback(a.shape, meshes.rows(mesh), lambda idx: a[idx])
