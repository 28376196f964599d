"""The loss flow member of the operator family: losses with a state-dependent output Hessian.

With r = N grad_f Loss, H_n and x = H^+ r (ntkngd.losses), one step moves the outputs by
Delta f = -lr G(f) r, Delta f' = -lr G'(f) r:
  GD:         G = Theta / N, G' = Theta(X', X) / N.
  pattern S:  Delta theta_l = -lr J_l^T v_l with the (L N C) system
              [(S (x) I) blockdiag(H Theta_l) + N rho I] v = 1 (x) r   (rho > 0).
  rho -> 0:   the minimum-norm solution. At infinite width (Theta_l = Theta*_l (x) I_C)
              G(f) r = G_MSE x, alpha = 1^T S^+ 1; on finite-width kernels M x with the constant
              M = sum_l Theta_l U V'_l U^T, V' the MSE pattern duals of U^T Theta_l U
              (U = I_N (x) U_C, `Loss.basis`).
  K-FAC, unit-wise: no function-space operator for these losses (docs/theory.md: open).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp
import numpy as np

from .._checks import TheoryConditionWarning
from ..networks.kernels import Kernels
from ..losses import Loss, softmax_cross_entropy
from ..methods import Method, patterns
from ..methods.dual_solve import pattern_duals, project
from .base import Core, FlowOperator


@dataclass(frozen=True)
class LossOperator(FlowOperator):
    """G(f) and G'(f) of one method for one loss (`FlowOperator`).

    kind: "gd", "pinv" (rho -> 0: G x with constant matrices), "damped_exact", "damped_pattern".
    train/test: N x N factors (kron) or sample-major (N C x N C) matrices; (L, m, m) per-layer
    blocks for "damped_pattern". alpha = 1^T S^+ 1 for NGD-type methods (None for GD)."""

    name: str
    kind: str
    train: jnp.ndarray
    test: Optional[jnp.ndarray]
    pattern: Optional[jnp.ndarray]
    alpha: Optional[float]
    damping: float
    out_dim: int
    n_train: int
    n_test: int
    kron: bool
    notes: tuple = ()
    loss: Loss = softmax_cross_entropy

    def core(self) -> Core:
        """The jit-friendly equinox module holding the arrays (what the integrators trace)."""
        dtype = jnp.asarray(self.train).dtype
        return Core(self.train, self.test, self.pattern,
                    jnp.asarray(self.n_train * self.damping, dtype), self.kind, self.kron,
                    self.loss)


def _full(a: np.ndarray, c: int, kron: bool) -> np.ndarray:
    """Expand an N x N factor to the sample-major (N C) x (N C) matrix K (x) I_C."""
    return np.kron(a, np.eye(c)) if kron else a


def _make(m: Method, K: Kernels, loss: Loss, kind: str, train, test, **fields) -> LossOperator:
    """A LossOperator of method m on K with train/test as JAX arrays (fields: the rest)."""
    return LossOperator(name=m.name, kind=kind, train=jnp.asarray(train),
                        test=None if test is None else jnp.asarray(test), out_dim=int(K.out_dim),
                        n_train=K.n_train, n_test=K.n_test, loss=loss, **fields)


def method_pattern(m: Method, loss: Loss, depth: int):
    """The method's BlockPattern (None for GD); methods without a function-space theory for this
    loss raise NotImplementedError."""
    if m.kind == "gd":
        return None
    if m.kind != "pattern":
        raise NotImplementedError(
            f"{m.name} with the {loss.name} loss (cross-entropy-type, H != I) has no "
            "function-space operator: its Kronecker/unit factors do not commute with the "
            "per-sample output Hessian (docs/theory.md: open); use the finite-width engine "
            "(ntkngd.train / ngd_direction with loss=...), which measures it")
    pattern = m.pattern(depth)
    if pattern.depth != depth:
        raise ValueError(f"block pattern is {pattern.depth} x {pattern.depth} but the network has "
                         f"{depth} layers")
    return pattern


def loss_operator(m: Method, K: Kernels, damping: float, loss: Loss) -> LossOperator:
    """The function-space operator of method m for `loss` on kernels K (module docstring).
    damping = 0 on finite-width kernels gives the minimum-norm limit (`min_norm_operator`)."""
    loss.check_outputs(int(K.out_dim))
    pattern = method_pattern(m, loss, K.depth)
    c, kron, n = int(K.out_dim), bool(K.kron_outputs), K.n_train
    common = dict(damping=damping, kron=kron)
    dtype = np.float64
    if pattern is None:
        test = None if not K.has_test else np.asarray(K.ntk_test, dtype) / n
        return _make(m, K, loss, "gd", np.asarray(K.ntk_train, dtype) / n, test, pattern=None,
                     alpha=None, **common)
    S = pattern.matrix
    in_range = patterns.ones_in_range(S)
    alpha = patterns.alpha(S) if in_range else None
    if damping == 0:
        if not kron:
            return min_norm_operator(m, K, loss)
        op = m.operator(K, 0.0)         # minimum-norm limit (raises if 1 not in range(S))
        return _make(m, K, loss, "pinv", op.train, op.test, pattern=None, alpha=alpha,
                     notes=op.notes, **common)
    notes = []
    if not in_range:
        msg = ("1 is not in the range of the block pattern S: the damped update diverges as "
               "damping -> 0")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    if np.linalg.eigvalsh(S).min() < -1e-12:
        notes.append("S is indefinite (e.g. BTD, L >= 3): with damping > 0 the damped Fisher "
                     "F_S + rho I can become singular along the flow (the solver then stops with "
                     "an error); damping = 0 (the minimum-norm limit) has no such point")
    blocks = np.asarray(K.blocks_train, dtype)
    tblocks = None if not K.has_test else np.asarray(K.blocks_test, dtype)
    if S.shape[0] == 1 or np.all(S == 1):     # exact NGD: one block, the total NTK
        train = _full(blocks.sum(0), c, kron)
        test = None if tblocks is None else _full(tblocks.sum(0), c, kron)
        return _make(m, K, loss, "damped_exact", train, test, pattern=None, alpha=alpha,
                     notes=tuple(notes), **common)
    train = np.stack([_full(b, c, kron) for b in blocks])
    test = None if tblocks is None else np.stack([_full(b, c, kron) for b in tblocks])
    return _make(m, K, loss, "damped_pattern", train, test, pattern=jnp.asarray(S), alpha=alpha,
                 notes=tuple(notes), **common)


def min_norm_operator(m: Method, K: Kernels, loss: Loss) -> LossOperator:
    """The rho -> 0 operator on finite-width kernels: G(f) r = M x, M = sum_l Theta_l U V'_l U^T,
    M' = sum_l Theta_l(X', X) U V'_l U^T, V'_l the MSE pattern duals of the projected blocks
    U^T Theta_l U (U = I_N (x) U_C, `Loss.basis`); U^T M = alpha U^T on the training points."""
    pattern = method_pattern(m, loss, K.depth)
    c, n = int(K.out_dim), K.n_train
    if pattern is None:
        return loss_operator(m, K, 0.0, loss)
    S = pattern.matrix
    if not patterns.ones_in_range(S):
        raise ValueError("1 is not in the range of the block pattern S: the undamped update does "
                         "not exist; use damping > 0")
    blocks = np.asarray(K.blocks_train, np.float64)
    tblocks = None if not K.has_test else np.asarray(K.blocks_test, np.float64)
    if S.shape[0] == 1 or np.all(S == 1):
        blocks, S = blocks.sum(0)[None], np.ones((1, 1))
        tblocks = None if tblocks is None else tblocks.sum(0)[None]
    uc = np.asarray(loss.basis(c), float)
    u = np.kron(np.eye(n), uc)                                           # (N C, N k)
    pb = project(jnp.asarray(blocks), uc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TheoryConditionWarning)
        v, notes = pattern_duals(pb, S, n, 0.0, jnp.eye(u.shape[1], dtype=pb.dtype))
    if caught and loss.identity_hessian:
        for w in caught:
            warnings.warn(w.message, w.category)
    elif caught:
        msg = ("a projected NTK block is singular: the rho -> 0 limit then depends on the loss "
               "Hessian H(f) (ntkngd.ngd_direction computes it exactly per step); this constant "
               "operator is the minimum-norm solution with H = I on range(H), an approximation")
        warnings.warn(msg, TheoryConditionWarning)
        notes = list(notes) + [msg]
    w = np.einsum("ai,lij,bj->lab", u, np.asarray(v), u)                  # U V'_l U^T
    train = np.einsum("lab,lbc->ac", blocks, w)
    test = None if tblocks is None else np.einsum("lab,lbc->ac", tblocks, w)
    return _make(m, K, loss, "pinv", train, test, pattern=None, alpha=patterns.alpha(S),
                 damping=0.0, kron=False,
                 notes=tuple(notes) + ("finite-width rho -> 0 limit (minimum-norm)",))
