"""Dual solves of the block-pattern updates for any loss, in jax.numpy (jittable, inputs' dtype).

With S the L x L pattern, Theta_l the per-layer kernel blocks (N C x N C, sample-major), H the
per-sample output Hessian of the loss and r its residual (ntkngd.losses), the update is
Delta theta_l = -lr J_l^T v_l with
    damped (rho > 0):  [(S (x) I) blockdiag(H Theta_l) + N rho I] v = 1 (x) r,
    rho -> 0:          the parameter-space minimum-norm solution: minimise sum_l w_l^T Theta_l^+ w_l
                       (w_l = Theta_l v_l) subject to (S (x) H) w = 1 (x) r.
For rho -> 0 the null space of H (softmax: the all-ones logit shift of each sample) is removed by
projecting onto U = I_N (x) U_C (U_C an orthonormal basis of range(H_n), `Loss.basis`): the
problem becomes the MSE pattern problem on U^T Theta_l U with right-hand side U^T H^+ r, solved as
    w = c (x) x + sum_j n_j (x) z_j,  v_l = Theta_l^{-1} w_l,  c = S^+ 1, n_j spanning null(S),
with z minimising sum_l w_l^T Theta_l^{-1} w_l (Cholesky; every block positive definite), or, when
a block is singular, v = Kb^{+1/2} [(S (x) I) Kb^{1/2}]^+ (1 (x) x). Rank cuts and the positive-
definiteness test follow the dtype (`linalg.rank_rtol`). Exact NGD (S = 1 1^T) is one block, the
total kernel, whose v every layer shares.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning
from .patterns import ones_in_range


def is_exact(S: np.ndarray) -> bool:
    return S.shape[0] == 1 or bool(np.all(S == 1))


def assemble(S: np.ndarray, mats: jnp.ndarray) -> jnp.ndarray:
    """The (L m, L m) matrix with block (i, j) = S_ij mats_j."""
    L, m, _ = mats.shape
    return jnp.einsum("ij,jab->iajb", jnp.asarray(S, mats.dtype), mats).reshape(L * m, L * m)


def _sym(a):
    return linalg.symmetrized(a)


def cholesky_per_block(blocks: jnp.ndarray):
    """Upper Cholesky factors u (L, m, m) of the symmetrized blocks (u^T u = block:
    `linalg.cholesky_upper`, solved with `linalg.cho_solve_upper`) and, per block, whether it is
    numerically positive definite (condition number below ~1/rank_rtol of the dtype: min/max of
    diag(u) above sqrt(rtol))."""
    rtol = linalg.rank_rtol(blocks.dtype)
    # one factorization per block: faster than the batched one on CPU
    c = jnp.stack([linalg.cholesky_upper(b, symmetrize=True) for b in blocks])
    return c, linalg.factor_is_pd(c, rtol)


def cholesky_blocks(blocks: jnp.ndarray):
    """Upper Cholesky factors (L, m, m) and whether every block is numerically positive definite
    (`cholesky_per_block`); a traced bool under jit."""
    c, ok = cholesky_per_block(blocks)
    return c, jnp.all(ok)


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


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


def range_weights(S: np.ndarray) -> np.ndarray:
    """c = S^+ 1: with every block positive definite and S nonsingular the rho -> 0 duals are
    v_l = c_l Theta_l^{-1} g."""
    return np.linalg.pinv(S) @ np.ones(len(S))


def _pinv_limit(blocks: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray) -> jnp.ndarray:
    """rho -> 0 limit for singular blocks: v = Kb^{+1/2} [(S (x) I) Kb^{1/2}]^+ (1 (x) rhs)."""
    rtol = linalg.rank_rtol(blocks.dtype)
    L, m, _ = blocks.shape
    w, u, keep = linalg.kept_spectrum(_sym(blocks))
    root = jnp.sqrt(w)
    inv_root = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
    roots = jnp.einsum("lij,lj,lkj->lik", u, root, u)
    inv_roots = jnp.einsum("lij,lj,lkj->lik", u, inv_root, u)
    y = jnp.linalg.pinv(assemble(S, roots), rtol=rtol) @ jnp.tile(rhs, (L, 1))
    return jnp.einsum("lij,ljk->lik", inv_roots, y.reshape(L, m, -1))


def limit_duals(blocks: jnp.ndarray, S: np.ndarray, rhs: jnp.ndarray, factors=None) -> jnp.ndarray:
    """rho -> 0 duals (L, m, K) for right-hand sides rhs (m, K): Cholesky minimum norm when every
    block is positive definite, the pseudo-inverse limit otherwise (chosen on device by lax.cond
    under jit, by a host branch on concrete arrays). factors: (chol, ok) from `cholesky_blocks`."""
    chol, ok = cholesky_blocks(blocks) if factors is None else factors
    if _concrete(ok):
        return _min_norm(chol, S, rhs) if bool(ok) else _pinv_limit(blocks, S, rhs)
    return jax.lax.cond(ok, lambda: _min_norm(chol, S, rhs),
                        lambda: _pinv_limit(blocks, S, rhs))


def pattern_duals(blocks: jnp.ndarray, S: np.ndarray, n_samples: int, damping: float,
                  rhs: jnp.ndarray, factors=None) -> tuple[jnp.ndarray, list[str]]:
    """MSE duals v (L, m, K) of pattern S for right-hand sides rhs (m, K), and notes on the theory
    conditions (each failed one warned as a TheoryConditionWarning). Eager (function-space
    operators, rhs = I); `loss_duals` is the jittable per-residual form of the same solve.
    damping rho adds N rho I in the dual space; factors: (chol, per-block ok) from
    `cholesky_per_block`, shared between methods (ntkngd.methods._cache)."""
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
    msg = f"NTK block(s) of layer(s) {singular} are singular: using the pseudo-inverse limit"
    warnings.warn(msg, TheoryConditionWarning)
    return _pinv_limit(blocks, S, rhs), notes + [msg]


def damped_duals(hblocks: jnp.ndarray, S: np.ndarray, shift, rhs: jnp.ndarray) -> jnp.ndarray:
    """[(S (x) I) blockdiag(hblocks) + shift I] v = 1 (x) rhs, v (L, m, K)."""
    L, m, _ = hblocks.shape
    big = assemble(S, hblocks) + shift * jnp.eye(L * m, dtype=hblocks.dtype)
    return jnp.linalg.solve(big, jnp.tile(rhs, (L, 1))).reshape(L, m, -1)


def hessian_rows(H: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
    """blockdiag_n(H_n) @ a for per-sample H (N, C, C) and a (N C, k) sample-major."""
    n, c, _ = H.shape
    return jnp.einsum("ncd,ndk->nck", H, a.reshape(n, c, -1)).reshape(n * c, -1)


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
        if uc.shape == (c, c) and np.array_equal(uc, np.eye(c)):
            v = limit_duals(blocks, S, x.reshape(-1, 1))[..., 0]
        else:
            k = uc.shape[1]
            rhs = (x @ jnp.asarray(uc, x.dtype)).reshape(-1, 1)
            vp = limit_duals(project(blocks, uc), S, rhs)[..., 0].reshape(-1, n, k)
            v = jnp.einsum("lnk,ck->lnc", vp, jnp.asarray(uc, x.dtype)).reshape(-1, n * c)
    return jnp.repeat(v, L, 0) if exact else v
