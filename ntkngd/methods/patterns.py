"""Layer block patterns of the Fisher: exact NGD, block diagonal, block tri-diagonal, any S.

S is the L x L 0/1 pattern of kept Fisher blocks, F_S = Jb^T (S (x) I) Jb / N; the update is
    Delta theta_l = -lr J_l^T v_l,   [(S (x) I) blockdiag(Theta_l) + N rho I] v = 1 (x) g,
so Delta f = -lr sum_l Theta_l v_l, with rho = 0 the minimum-norm limit (docs/theory.md) and
G = (1^T S^+ 1) I on the training points. The solves are ntkngd.methods.dual_solve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """A layer block pattern of the Fisher, for `operator`, `ngd_direction`, `train`, ...

    S is a symmetric 0/1 L x L matrix with unit diagonal: S[k, l] = 1 keeps the Fisher block of
    layers k and l (ones: exact NGD, I: block diagonal). At infinite width G = alpha I with
    alpha = 1^T S^+ 1 whenever 1 lies in range(S) (docs/theory.md, section 2).

    Example (L = 3; layers 1 and 2 share a block, layer 3 stands alone; alpha = 1 + 1 = 2):
        S = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
        op = ng.operator(ng.block_pattern(S, "pairs"), K)     # op.alpha_theory == 2.0

    Raises ValueError unless S is square, symmetric, 0/1 with a unit diagonal.
    """
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
    """The block tri-diagonal pattern: S_ij = 1 for |i - j| <= 1 (L x L over layers).

    alpha = 1^T S^+ 1 is 1, 1, 1, 2, 2, 2, 3, ... for L = 1, 2, 3, ...; S is singular at
    L = 2, 5, 8, ..., where the rho -> 0 (parameter-space minimum-norm) limit is used."""
    s = np.eye(depth) + np.eye(depth, k=1) + np.eye(depth, k=-1)
    return block_pattern(s, "block_tridiagonal")


def full(depth: int) -> BlockPattern:
    return block_pattern(np.ones((depth, depth)), "exact")


def range_weights(S: np.ndarray) -> np.ndarray:
    """c = S^+ 1: with every block positive definite and S nonsingular the rho -> 0 duals are
    v_l = c_l Theta_l^{-1} g."""
    return np.linalg.pinv(S) @ np.ones(len(S))


def ones_in_range(S: np.ndarray) -> bool:
    """Whether 1 lies in the range of S (the condition for the undamped update to exist)."""
    return bool(np.allclose(S @ range_weights(S), 1.0, atol=1e-9))


def alpha(S: np.ndarray) -> float:
    """alpha = 1^T S^+ 1, the isotropic constant of a pattern (when 1 is in the range of S)."""
    return float(np.sum(range_weights(S)))
