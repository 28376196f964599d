"""Dual solves of the block-pattern updates for any loss, in jax.numpy (jittable, inputs' dtype).

With S the L x L pattern, blocks Theta_l (N C x N C), H the loss's per-sample Hessian and r its
residual, Delta theta_l = -lr J_l^T v_l with
    damped (rho > 0):  [(S (x) I) blockdiag(H Theta_l) + N rho I] v = 1 (x) r,
    rho -> 0:          the minimum-norm step F_S^+ grad, F_S = Jb^T (S (x) H) Jb
(positive-definite blocks: v_l = Theta_l^{-1} w_l, w = c (x) x + sum_j n_j (x) z_j, c = S^+ 1;
singular ones: `_pinv_limit`; docs/theory.md). Exact NGD is one block, the total kernel.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from ..dynamics.base import hessian_rows
from ._layers import block_diag, psd_root
from .patterns import ones_in_range, range_weights


def is_exact(S: np.ndarray) -> bool:
    """Whether S = 1 1^T (exact NGD: one block, the total kernel)."""
    return S.shape[0] == 1 or bool(np.all(S == 1))


def cholesky_per_block(blocks: jnp.ndarray):
    """Upper Cholesky factors u (L, m, m) of the symmetrized blocks (u^T u = block,
    `linalg.cholesky_upper`) and, per block, whether it is numerically positive definite
    (`linalg.factor_is_pd` at the dtype's rank_rtol)."""
    rtol = linalg.rank_rtol(blocks.dtype)
    # one factorization per block: faster than the batched one on CPU
    c = jnp.stack([linalg.cholesky_upper(b, symmetrize=True) for b in blocks])
    return c, linalg.factor_is_pd(c, rtol)


def _null_basis(S: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh(S)
    return u[:, np.abs(w) <= 1e-10 * np.abs(w).max()]


def _min_norm(chol: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray) -> jnp.ndarray:
    """rho -> 0 limit with every block positive definite (module docstring)."""
    c = jnp.asarray(range_weights(S), rhs.dtype)
    null = jnp.asarray(_null_basis(S), rhs.dtype)
    k = null.shape[1]
    solve = jax.vmap(linalg.cho_solve_upper, in_axes=(0, None))
    inv_rhs = solve(chol, rhs)                                          # (L, m, K)
    if k == 0:
        return c[:, None, None] * inv_rhs
    m = rhs.shape[0]
    inv_eye = solve(chol, jnp.eye(m, dtype=rhs.dtype))                  # (L, m, m)
    lhs = jnp.einsum("la,lb,lij->aibj", null, null, inv_eye).reshape(k * m, k * m)
    right = -jnp.einsum("la,l,lmk->amk", null, c, inv_rhs).reshape(k * m, -1)
    z = jnp.linalg.solve(lhs, right).reshape(k, m, -1)
    w = c[:, None, None] * rhs[None] + jnp.einsum("la,amk->lmk", null, z)
    return jnp.einsum("lij,ljk->lik", inv_eye, w)


def has_null_space(S: np.ndarray) -> bool:
    """Whether the pattern S is singular (then the rho -> 0 limit needs the null-space term)."""
    return _null_basis(S).shape[1] > 0


def _eigen_system(blocks: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray):
    """The system of `_pinv_limit` in each block's eigenbasis Theta_l = u_l diag(s_l^2) u_l^T
    (per-block rank cut): B_lk = S_lk diag(s_l) u_l^T u_k diag(s_k) and y_l = diag(s_l) u_l^T rhs.
    Returns (u, 1/s (0 off the kept spectrum), B's eigenvalues, eigenvectors, kept mask, y)."""
    L, m, _ = blocks.shape
    rtol = linalg.rank_rtol(blocks.dtype)
    w, u, keep = linalg.kept_spectrum(linalg.symmetrized(blocks))
    inv_s = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
    us = u * jnp.where(keep, jnp.sqrt(w), 0.0)[:, None, :]              # u_l diag(s_l)
    big = jnp.einsum("lk,lai,kaj->likj", jnp.asarray(S, us.dtype), us, us).reshape(L * m, L * m)
    y = jnp.einsum("lai,ak->lik", us, rhs).reshape(L * m, -1)
    lam, q = linalg.eigh_symmetric(linalg.symmetrized(big))
    kept = jnp.abs(lam) > rtol * jnp.maximum(jnp.abs(lam).max(), jnp.finfo(lam.dtype).tiny)
    return u, inv_s, lam, q, kept, y


def _pinv_limit(blocks: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray,
                root=None) -> jnp.ndarray:
    """rho -> 0 limit with a singular block: the minimum-norm step F_S^+ grad in dual form,
        v = K^{+1/2} [K^{1/2} (S (x) I) K^{1/2}]^+ K^{1/2} (1 (x) rhs),  K = blockdiag(Theta_l),
    as v_l = u_l diag(1/s_l) (B^+ y)_l (`_eigen_system`: B's non-zero eigenvalues are F_S's). root:
    per-sample Hessian roots D_n = H_n^{1/2} (None: H = I), then solved on D Theta_l D, rhs D x."""
    if root is not None:
        dmat = block_diag(root)
        blocks = jnp.einsum("ab,lbc,cd->lad", dmat, blocks, dmat)
        rhs = dmat @ rhs
    v = _solve_system(_eigen_system(blocks, S, rhs))
    return v if root is None else jnp.einsum("ab,lbk->lak", dmat, v)


def _solve_system(system) -> jnp.ndarray:
    """v_l = u_l diag(1/s_l) (B^+ y)_l from `_eigen_system`'s output, (L, m, K)."""
    u, inv_s, lam, q, kept, y = system
    inv_lam = jnp.where(kept, 1.0 / jnp.where(kept, lam, 1.0), 0.0)
    z = (q @ (inv_lam[:, None] * (q.T @ y))).reshape(u.shape[0], u.shape[1], -1)
    return jnp.einsum("lai,li,lik->lak", u, inv_s, z)


def _outside_range(system) -> bool:
    """Whether y = K^{1/2} (1 (x) rhs) has a part outside the range of B = K^{1/2} (S (x) I)
    K^{1/2} above sqrt of the dtype's rank cut (relative), from `_eigen_system`'s output: then
    the gradient is not in range(F_S), the damped update diverges as rho -> 0, and
    `_solve_system` is the least-squares minimum-norm F_S^+ grad. Eager (a host bool)."""
    _, _, _, q, kept, y = system
    inside = q @ (jnp.where(kept, 1.0, 0.0)[:, None] * (q.T @ y))
    return bool(jnp.linalg.norm(y - inside) > np.sqrt(linalg.rank_rtol(y.dtype))
                * jnp.linalg.norm(y))


def limit_duals(blocks: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray, factors=None,
                root=None) -> jnp.ndarray:
    """rho -> 0 duals (L, m, K) for rhs (m, K): Cholesky minimum norm when every block is positive
    definite, else `_pinv_limit` (lax.cond under jit, a host branch otherwise). factors: (chol, all
    positive definite); root: a callable giving the Hessian roots (None: H = I)."""
    if factors is None:
        chol, ok = cholesky_per_block(blocks)
        factors = chol, jnp.all(ok)
    chol, ok = factors

    def pinv():
        return _pinv_limit(blocks, S, rhs, None if root is None else root())

    if not isinstance(ok, jax.core.Tracer):
        return _min_norm(chol, S, rhs) if bool(ok) else pinv()
    return jax.lax.cond(ok, lambda: _min_norm(chol, S, rhs), pinv)


def _projected_hessian_root(loss, f: jnp.ndarray, uc: np.ndarray) -> jnp.ndarray:
    """Per-sample (U_C^T H_n U_C)^{1/2} (n, k, k) (`_layers.psd_root`)."""
    u = jnp.asarray(uc, f.dtype)
    return psd_root(linalg.symmetrized(jnp.einsum("ci,ncd,dj->nij", u, loss.hessian(f), u)))


def pattern_duals(blocks: jnp.ndarray, S: np.ndarray, n_samples: int, damping: float,
                  rhs: jnp.ndarray, factors=None) -> tuple[jnp.ndarray, list[str]]:
    """MSE duals v (L, m, K) of pattern S for rhs (m, K) and notes on the theory conditions (each
    failed one warned, TheoryConditionWarning); eager (`loss_duals` is the jittable form). damping
    rho adds N rho I in the dual space; factors: (chol, per-block ok) (ntkngd.methods._cache)."""
    notes = []
    if not ones_in_range(S):
        msg = "1 is not in the range of the block pattern S: the undamped update does not exist"
        if damping == 0:
            raise ValueError(msg + "; use damping > 0")
        warnings.warn(msg + "; the damped update diverges as damping -> 0", TheoryConditionWarning)
        notes.append(msg)
    if damping > 0:
        return damped_duals(blocks, S, n_samples * damping, rhs), notes
    chol, ok = cholesky_per_block(blocks) if factors is None else factors
    ok = np.asarray(ok)
    if ok.all():
        return _min_norm(chol, S, rhs), notes
    singular = [int(l) + 1 for l in np.flatnonzero(~ok)]
    msg = (f"NTK block(s) of layer(s) {singular} are singular: returning the rho -> 0 limit, the "
           "minimum-norm step F_S^+ grad (pseudo-inverse of the pattern's Fisher)")
    system = _eigen_system(blocks, S, rhs)
    if _outside_range(system):
        msg = (f"NTK block(s) of layer(s) {singular} are singular and the gradient is not in the "
               "range of the pattern's Fisher F_S: the damped update diverges as damping -> 0; "
               "returning the least-squares minimum-norm step F_S^+ grad")
    warnings.warn(msg, TheoryConditionWarning)
    return _solve_system(system), notes + [msg]


def damped_duals(hblocks: jnp.ndarray, S: np.ndarray, shift, rhs: jnp.ndarray) -> jnp.ndarray:
    """[(S (x) I) blockdiag(hblocks) + shift I] v = 1 (x) rhs, v (L, m, K)."""
    L, m, _ = hblocks.shape
    big = jnp.einsum("ij,jab->iajb", jnp.asarray(S, hblocks.dtype), hblocks).reshape(L * m, L * m)
    big = big + shift * jnp.eye(L * m, dtype=hblocks.dtype)
    return jnp.linalg.solve(big, jnp.tile(rhs, (L, 1))).reshape(L, m, -1)


def project(blocks: jnp.ndarray, uc: np.ndarray) -> jnp.ndarray:
    """U^T Theta_l U for sample-major blocks (L, N C, N C), U = I_N (x) U_C."""
    L, m, _ = blocks.shape
    c, k = uc.shape
    n = m // c
    u = jnp.asarray(uc, blocks.dtype)
    b5 = blocks.reshape(L, n, c, n, c)
    return jnp.einsum("lacbd,ci,dj->laibj", b5, u, u).reshape(L, n * k, n * k)


def loss_duals(blocks: jnp.ndarray, S: np.ndarray, damping: float, f: jnp.ndarray,
               y: jnp.ndarray, loss) -> jnp.ndarray:
    """Per-layer duals v (L, N C) of pattern S at outputs f (N, C), targets y, for `loss`."""
    L = blocks.shape[0]
    n, c = f.shape
    exact = is_exact(S)
    if exact:
        blocks, S = blocks.sum(0)[None], np.ones((1, 1))
    if damping > 0:
        r = loss.residual(f, y).reshape(-1, 1)
        hb = blocks if loss.identity_hessian else \
            jax.vmap(lambda b: hessian_rows(loss.hessian(f), b))(blocks)
        v = damped_duals(hb, S, n * damping, r)[..., 0]
    else:
        x = loss.pinv_residual(f, y)
        uc = np.asarray(loss.basis(c), float)
        root = None if loss.identity_hessian else (lambda: _projected_hessian_root(loss, f, uc))
        if uc.shape == (c, c) and np.array_equal(uc, np.eye(c)):
            v = limit_duals(blocks, S, x.reshape(-1, 1), root=root)[..., 0]
        else:
            k = uc.shape[1]
            rhs = (x @ jnp.asarray(uc, x.dtype)).reshape(-1, 1)
            vp = limit_duals(project(blocks, uc), S, rhs, root=root)[..., 0].reshape(-1, n, k)
            v = jnp.einsum("lnk,ck->lnc", vp, jnp.asarray(uc, x.dtype)).reshape(-1, n * c)
    return jnp.repeat(v, L, 0) if exact else v
