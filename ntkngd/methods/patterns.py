"""Layer block patterns of the Fisher: exact NGD, block diagonal, block tri-diagonal, any S.

With S the L x L 0/1 pattern of kept Fisher blocks, F_S = Jb^T (S (x) I) Jb / N, and the update is
    Delta theta_l = -lr J_l^T v_l,   [(S (x) I) blockdiag(Theta_l) + N rho I] v = 1 (x) g,
so Delta f = -lr sum_l Theta_l v_l (push-through identity; no P x P matrix). With rho = 0 the
limit rho -> 0 is taken: the parameter-space minimum-norm solution (docs/theory.md), computed as
    w = c (x) g + sum_j n_j (x) z_j,   v_l = Theta_l^{-1} w_l,   c = S^+ 1, n_j spanning null(S),
with z minimising sum_l w_l^T Theta_l^{-1} w_l. On the training points G = (1^T S^+ 1) I.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .. import linalg
from .._checks import TheoryConditionWarning

_NULL_RTOL = 1e-10


@dataclass(frozen=True)
class BlockPattern:
    """A symmetric 0/1 layer pattern S with unit diagonal, and a display name."""

    matrix: np.ndarray
    name: str = "block_pattern"

    @property
    def depth(self) -> int:
        """L, the number of layers the pattern covers."""
        return self.matrix.shape[0]

    def __hash__(self) -> int:
        return hash((self.name, self.matrix.tobytes()))

    def __eq__(self, other) -> bool:
        return isinstance(other, BlockPattern) and self.name == other.name and \
            np.array_equal(self.matrix, other.matrix)


def block_pattern(S, name: str = "block_pattern") -> BlockPattern:
    """Validate a layer pattern: square, symmetric, entries 0 or 1, ones on the diagonal."""
    s = np.asarray(S)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise ValueError(f"block pattern must be a non-empty square L x L matrix, got shape {s.shape}")
    if not np.all(np.isin(s, (0, 1))):
        raise ValueError("block pattern entries must be 0 or 1")
    if not np.array_equal(s, s.T):
        raise ValueError("block pattern must be symmetric (S = S^T)")
    if not np.all(np.diag(s) == 1):
        raise ValueError("block pattern must have ones on the diagonal (every layer keeps its block)")
    return BlockPattern(s.astype(float), name)


def diagonal(depth: int) -> BlockPattern:
    return block_pattern(np.eye(depth), "block_diagonal")


def tridiagonal(depth: int) -> BlockPattern:
    """The block tri-diagonal pattern: S_ij = 1 for |i - j| <= 1 (L x L over layers)."""
    s = np.eye(depth) + np.eye(depth, k=1) + np.eye(depth, k=-1)
    return block_pattern(s, "block_tridiagonal")


def full(depth: int) -> BlockPattern:
    return block_pattern(np.ones((depth, depth)), "exact")


def ones_in_range(S: np.ndarray) -> bool:
    """Whether 1 lies in the range of S (the condition for the undamped update to exist)."""
    c = np.linalg.pinv(S) @ np.ones(len(S))
    return bool(np.allclose(S @ c, 1.0, atol=1e-9))


def alpha(S: np.ndarray) -> float:
    """alpha = 1^T S^+ 1, the isotropic constant of a pattern (when 1 is in the range of S)."""
    return float(np.ones(len(S)) @ np.linalg.pinv(S) @ np.ones(len(S)))


def _null_basis(S: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh(S)
    return u[:, np.abs(w) <= _NULL_RTOL * np.abs(w).max()]


def _damped_duals(blocks: np.ndarray, S: np.ndarray, shift: float, rhs: np.ndarray) -> np.ndarray:
    L, m, _ = blocks.shape
    big = np.zeros((L * m, L * m))
    for i in range(L):
        for j in range(L):
            if S[i, j]:
                big[i * m:(i + 1) * m, j * m:(j + 1) * m] = blocks[j]
    big += shift * np.eye(L * m)
    v = np.linalg.solve(big, np.tile(rhs, (L, 1)))
    return v.reshape(L, m, rhs.shape[1])


def _min_norm_duals(factors: list, S: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """rho -> 0 limit with every block positive definite (Cholesky factors given)."""
    L = len(S)
    c = np.linalg.pinv(S) @ np.ones(L)
    null = _null_basis(S)
    k = null.shape[1]
    inv_rhs = [linalg.cho_solve(f, rhs) for f in factors]        # Theta_l^{-1} g
    w_base = [c[l] * rhs for l in range(L)]
    if k:
        m = rhs.shape[0]
        inv_eye = [linalg.cho_solve(f, np.eye(m)) for f in factors]
        lhs = np.zeros((k * m, k * m))
        right = np.zeros((k * m, rhs.shape[1]))
        for a in range(k):
            right[a * m:(a + 1) * m] = -sum(null[l, a] * c[l] * inv_rhs[l] for l in range(L))
            for b in range(k):
                lhs[a * m:(a + 1) * m, b * m:(b + 1) * m] = sum(
                    null[l, a] * null[l, b] * inv_eye[l] for l in range(L))
        z = np.linalg.solve(lhs, right).reshape(k, m, -1)
        w_base = [w_base[l] + np.einsum("a,amk->mk", null[l], z) for l in range(L)]
        return np.stack([inv_eye[l] @ w_base[l] for l in range(L)])
    return np.stack([c[l] * inv_rhs[l] for l in range(L)])


def _pinv_duals(blocks: np.ndarray, S: np.ndarray, rhs: np.ndarray,
                rtol: float = linalg.RANK_RTOL) -> np.ndarray:
    """rho -> 0 limit for singular blocks: v = Kb^{+1/2} [(S (x) I) Kb^{1/2}]^+ (1 (x) g)."""
    L, m, _ = blocks.shape
    roots, inv_roots = [], []
    for b in blocks:
        w, u = linalg.psd_eigh(b)
        keep = linalg.rank_mask(w, rtol)
        roots.append((u * np.sqrt(w)) @ u.T)
        inv_roots.append((u * np.where(keep, 1 / np.sqrt(np.where(keep, w, 1)), 0)) @ u.T)
    big = np.zeros((L * m, L * m))
    for i in range(L):
        for j in range(L):
            if S[i, j]:
                big[i * m:(i + 1) * m, j * m:(j + 1) * m] = roots[j]
    y = np.linalg.pinv(big, rcond=rtol) @ np.tile(rhs, (L, 1))
    return np.stack([inv_roots[l] @ y[l * m:(l + 1) * m] for l in range(L)])


def duals(blocks: np.ndarray, S: np.ndarray, n_samples: int, damping: float,
          rhs: np.ndarray, factors: list | None = None,
          rtol: float = linalg.RANK_RTOL) -> tuple[np.ndarray, list[str]]:
    """Dual vectors v (L, m, k) of the pattern update for k right-hand sides g (m, k).

    blocks: per-layer NTK blocks Theta_l (L, m, m); damping rho adds N rho I in the dual space.
    factors: optional Cholesky factors of the blocks (reused across patterns).
    rtol: relative rank cut (`linalg.rank_rtol` of the kernels' dtype).
    Returns v and notes on the conditions used.
    """
    notes = []
    if not ones_in_range(S):
        msg = "1 is not in the range of the block pattern S: the undamped update does not exist"
        if damping == 0:
            raise ValueError(msg + "; use damping > 0")
        warnings.warn(msg + "; the damped update diverges as damping -> 0", TheoryConditionWarning)
        notes.append(msg)
    if damping > 0:
        return _damped_duals(blocks, S, n_samples * damping, rhs), notes
    if factors is None:
        factors = [linalg.try_cholesky(b, rtol) for b in blocks]
    if all(f is not None for f in factors):
        return _min_norm_duals(factors, S, rhs), notes
    singular = [l + 1 for l, f in enumerate(factors) if f is None]
    msg = f"NTK block(s) of layer(s) {singular} are singular: using the pseudo-inverse limit"
    warnings.warn(msg, TheoryConditionWarning)
    return _pinv_duals(blocks, S, rhs, rtol), notes + [msg]
