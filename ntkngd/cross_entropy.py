"""Cross-entropy (softmax) training dynamics in function space (THEORY.md, "Cross-entropy").

Convention: C >= 2 outputs, one-hot targets y (N x C),
    Loss = (1/N) sum_n -sum_c y_nc log softmax(f_n)_c,     residual r = p - y,  p = softmax(f).
Fisher F = J^T Hs J / N, Hs = blockdiag_n (diag(p_n) - p_n p_n^T) (the softmax Hessian of each
sample). Vectors over (sample, output) pairs are sample-major (row n * C + c), as in kernels.py.

Function-space operators (one step: Delta f = -lr G_CE(f) r, Delta f' = -lr G'_CE(f) r):
  GD:         G = Theta / N (the gradient is J^T r / N), G' = Theta(X', X) / N.
  exact NGD:  G = Theta (Hs Theta + N rho I)^{-1},  G' = Theta(X', X) (Hs Theta + N rho I)^{-1}.
  pattern S:  F_S = Jb^T (S (x) Hs) Jb / N (block (l, k) of the Fisher is S_lk J_l^T Hs J_k / N).
              Push-through, (Jb^T A Jb + N rho)^{-1} Jb^T = Jb^T (A Kb + N rho)^{-1}, with
              Kb = Jb Jb^T = blockdiag(Theta_l) and grad = Jb^T (1 (x) r) / N gives
                  Delta theta_l = -lr J_l^T v_l,  [(S (x) I) blockdiag(Hs Theta_l) + N rho I] v = 1 (x) r,
              an (L N C)-dimensional system (never P x P); Delta f = -lr sum_l Theta_l v_l.
              Exact NGD is S = 1 1^T (all v_l equal: the formula above).
  rho -> 0:   Hs is singular along the all-ones vector of each sample (a shift of all logits leaves
              p unchanged), so the limit is taken, as in patterns.py, as the parameter-space
              minimum-norm solution: minimise sum_l w_l^T Theta_l^{-1} w_l (w_l = Theta_l v_l)
              subject to (S (x) Hs) w = 1 (x) r. At infinite width Theta_l = Theta*_l (x) I_C
              commutes with the split of each sample's output space into span(1) and its
              complement, so the span(1) part of w is 0 and the rest is the MSE pattern problem
              with right-hand side x = Hs^+ r:
                  G_CE(f) = G_MSE Hs^+,   G'_CE(f) = G'_MSE Hs^+,
              with (G_MSE, G'_MSE) = ntkngd.operator(method, K, 0) (so train: alpha Hs^+ r,
              alpha = 1^T S^+ 1; BD alpha = L; exact alpha = 1). Hs^+ r is well defined because
              1^T r_n = 0 for one-hot y; per sample it is, in closed form (all p_c > 0),
                  Hs_n^+ r_n = q - mean(q) 1,   q = r'_n / p_n,  r'_n = r_n - mean(r_n) 1,
              and for r = p - y this is -(y/p - mean(y/p)): only 1/p of the true class enters,
              computed as exp(-log_softmax) (no division by an underflowed p_c).
              rho = 0 needs kron_outputs (infinite-width kernels); finite-width kernels need
              rho > 0 (the span(1) part then couples to the rest of the kernel).
  K-FAC, unit-wise: not defined here for cross-entropy (NotImplementedError).

Dynamics: the flow df/dtau = -lr G_CE(f) (softmax(f) - y) (and df'/dtau = -lr G'_CE(f) (p - y))
is nonlinear; it is integrated with diffrax (Tsit5, PID step-size control, float64 under
jax_enable_x64). The discrete map f_{t+1} = f_t - lr G_CE(f_t)(p_t - y) is iterated with
lax.fori_loop.
Both integrators are generic in the residual: with `mse_residual` and a constant operator
(`linear_operator(ntkngd.operator(...))`) they reproduce `ntkngd.predict` (MSE).

Relation to `neural_tangents.predict.gradient_descent(loss, k, y, learning_rate=eta,
trace_axes=(-1,))` with loss(fx, y) = -sum(y * log_softmax(fx)) / N (this module's loss): it
integrates df/dt = -eta Theta grad_loss = -eta Theta (p - y) / N, i.e. GD here with lr = eta and
tau = t.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from ._checks import TheoryConditionWarning
from .function_space import Operator
from .kernels import Kernels
from .methods import BlockPattern, canonical, patterns
from .operators import operator as mse_operator

__all__ = ["CEOperator", "LinearOperator", "CETrajectory", "ce_operator", "ce_predict",
           "linear_operator", "integrate_flow", "iterate_steps", "ce_residual", "mse_residual",
           "softmax_hessian", "softmax_hessian_pinv", "cross_entropy", "accuracy",
           "check_one_hot"]

_NOT_FOR_CE = {"kfac": "K-FAC", "unit_wise": "unit-wise"}


# ----------------------------------------------------------------------------- small helpers
def softmax_hessian(p: Any) -> jnp.ndarray:
    """Hessian of the per-sample cross-entropy in the logits, diag(p) - p p^T, over the last axis.

    p: probabilities (..., C). Returns (..., C, C) (one C x C block per sample; the full Hs is their
    block diagonal)."""
    p = jnp.asarray(p)
    return jnp.einsum("...c,cd->...cd", p, jnp.eye(p.shape[-1], dtype=p.dtype)) - \
        p[..., :, None] * p[..., None, :]


def softmax_hessian_pinv(p: Any, r: Any) -> jnp.ndarray:
    """(diag(p) - p p^T)^+ r per sample (last axis), closed form, for p with every entry > 0:
    x = q - mean(q), q = r' / p, r' = r - mean(r). (Hs has null space span(1); x is orthogonal
    to 1 and Hs x = r'.)"""
    p, r = jnp.asarray(p), jnp.asarray(r)
    q = (r - r.mean(-1, keepdims=True)) / p
    return q - q.mean(-1, keepdims=True)


def _ce_hs_pinv(f: jnp.ndarray, r: jnp.ndarray) -> jnp.ndarray:
    """Hs(f)^+ r with 1/p = exp(-log_softmax(f)) (stable for large logits on wrong classes when
    r = p - y: then r_c / p_c = 1 exactly on y_c = 0, up to rounding)."""
    inv_p = jnp.exp(-jax.nn.log_softmax(f, axis=-1))
    rc = r - r.mean(-1, keepdims=True)
    q = rc * inv_p
    return q - q.mean(-1, keepdims=True)


def cross_entropy(f: Any, y: Any) -> jnp.ndarray:
    """(1/N) sum_n -sum_c y_nc log softmax(f_n)_c over the last two axes (points, classes)."""
    f, y = jnp.asarray(f), jnp.asarray(y)
    return -jnp.sum(y * jax.nn.log_softmax(f, axis=-1), axis=(-2, -1)) / f.shape[-2]


def accuracy(f: Any, y: Any) -> jnp.ndarray:
    """Fraction of points whose largest output is the labelled class (last two axes)."""
    f, y = jnp.asarray(f), jnp.asarray(y)
    return jnp.mean(jnp.argmax(f, -1) == jnp.argmax(y, -1), axis=-1)


def ce_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Residual of the cross-entropy loss (N times its gradient in f): softmax(f) - y."""
    return jax.nn.softmax(f, axis=-1) - y


def mse_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Residual of Loss = 1/(2N) sum ||f - y||^2: f - y."""
    return f - y


def check_one_hot(y: Any, name: str, n: Optional[int], c: int) -> np.ndarray:
    """Validate one-hot targets of shape (n, c) for cross-entropy; returns a float array."""
    c = int(c)
    if c < 2:
        raise ValueError(f"cross-entropy needs C >= 2 outputs (classes) for the softmax; the "
                         f"network has out_dim = {c} (use the MSE loss for one output)")
    arr = _checks.as_array(y, name)   # None, non-numeric, empty, NaN / inf
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one-hot labels of shape (points, classes) = "
                         f"({n if n is not None else 'N'}, {c}), got shape {arr.shape} "
                         "(convert class indices with jax.nn.one_hot(labels, C))")
    if arr.shape[1] != c:
        raise ValueError(f"{name} has {arr.shape[1]} classes (columns) but the network has "
                         f"out_dim = {c} outputs: wrong class count")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} points but {n} were expected")
    if not np.all((arr == 0) | (arr == 1)) or not np.all(arr.sum(1) == 1):
        bad = int(np.sum(~(np.all((arr == 0) | (arr == 1), 1) & (arr.sum(1) == 1))))
        raise ValueError(f"{name} is not one-hot: {bad} row(s) are not a single 1 among 0s "
                         "(soft labels are not supported: Hs^+ (p - y) needs one-hot y)")
    return arr.astype(np.float64)


# ----------------------------------------------------------------------------- operators
def _mul(a: jnp.ndarray, r: jnp.ndarray, kron: bool) -> jnp.ndarray:
    """Kernel-like matrix times residual r (N, C): a @ r for N x N factors (kron), else on the
    sample-major flattened vector."""
    if kron:
        return a @ r
    return (a @ r.reshape(-1)).reshape(-1, r.shape[-1])


def _hs_mul(p: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
    """Hs(p) @ a for a (N C, k), Hs = blockdiag_n(diag(p_n) - p_n p_n^T), sample-major rows."""
    n, c = p.shape
    a3 = a.reshape(n, c, -1)
    pa = jnp.einsum("nc,nck->nk", p, a3)
    return (p[:, :, None] * (a3 - pa[:, None, :])).reshape(n * c, -1)


class _Core(eqx.Module):
    """The arrays and static structure a CEOperator computes with (what jit sees: names, alpha
    and the damping value do not trigger recompilation)."""

    train: jnp.ndarray
    test: Optional[jnp.ndarray]
    pattern: Optional[jnp.ndarray]
    shift: jnp.ndarray
    kind: str = eqx.field(static=True)
    kron: bool = eqx.field(static=True)

    def __call__(self, f: jnp.ndarray, r: jnp.ndarray):
        if self.kind == "gd":
            return _mul(self.train, r, self.kron), \
                None if self.test is None else _mul(self.test, r, self.kron)
        if self.kind == "pinv":
            x = _ce_hs_pinv(f, r)
            return _mul(self.train, x, self.kron), \
                None if self.test is None else _mul(self.test, x, self.kron)
        p = jax.nn.softmax(f, axis=-1)
        rf = r.reshape(-1)
        c = r.shape[-1]
        if self.kind == "damped_exact":
            m = self.train.shape[0]
            a = _hs_mul(p, self.train) + self.shift * jnp.eye(m, dtype=self.train.dtype)
            v = jnp.linalg.solve(a, rf)
            out = (self.train @ v).reshape(-1, c)
            return out, None if self.test is None else (self.test @ v).reshape(-1, c)
        # damped_pattern: [(S (x) I) blockdiag(Hs Theta_l) + N rho I] v = 1 (x) r
        L, m, _ = self.train.shape
        hb = jax.vmap(lambda b: _hs_mul(p, b))(self.train)                  # (L, m, m)
        big = jnp.einsum("ij,jab->iajb", self.pattern, hb).reshape(L * m, L * m)
        big = big + self.shift * jnp.eye(L * m, dtype=big.dtype)
        v = jnp.linalg.solve(big, jnp.tile(rf, L)).reshape(L, m)
        out = jnp.einsum("lab,lb->a", self.train, v).reshape(-1, c)
        test = None if self.test is None else jnp.einsum("lab,lb->a", self.test, v).reshape(-1, c)
        return out, test


@dataclass(frozen=True)
class CEOperator:
    """G_CE(f) and G'_CE(f) of one method for cross-entropy; call `op(f, r)` -> (G r, G' r or None).

    kind: "gd" (G = Theta/N), "pinv" (rho -> 0 at infinite width: G_MSE Hs^+),
    "damped_exact" (Theta (Hs Theta + N rho)^{-1}), "damped_pattern" (the (L N C) dual system).
    train/test: N x N factors (kron, "gd"/"pinv" on infinite-width kernels) or full sample-major
    (N C x N C) matrices; (L, m, m) per-layer blocks for "damped_pattern". alpha = 1^T S^+ 1 for
    NGD-type methods (None for GD).
    """

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

    def core(self) -> _Core:
        return _Core(self.train, self.test, self.pattern,
                     jnp.asarray(self.n_train * self.damping, jnp.float64), self.kind, self.kron)

    def __call__(self, f: Any, r: Any):
        return self.core()(jnp.asarray(f), jnp.asarray(r))


class LinearOperator(eqx.Module):
    """A constant function-space operator (G, G') as an `op(f, r)` callable: (G r, G' r)."""

    train: jnp.ndarray
    test: Optional[jnp.ndarray]
    kron: bool = eqx.field(static=True)

    def __call__(self, f: jnp.ndarray, r: jnp.ndarray):
        return _mul(self.train, r, self.kron), \
            None if self.test is None else _mul(self.test, r, self.kron)


def linear_operator(op: Operator) -> LinearOperator:
    """Wrap an MSE `ntkngd.Operator` (from `ntkngd.operator`) for `integrate_flow`/`iterate_steps`."""
    if not isinstance(op, Operator):
        raise TypeError(f"op must be an ntkngd Operator, got {type(op).__name__}")
    test = None if op.test is None else jnp.asarray(op.test)
    return LinearOperator(jnp.asarray(op.train), test, bool(op.kron_outputs))


def _full(a: np.ndarray, c: int, kron: bool) -> np.ndarray:
    """Expand an N x N factor to the sample-major (N C) x (N C) matrix K (x) I_C."""
    return np.kron(a, np.eye(c)) if kron else a


def ce_operator(method: Union[str, BlockPattern], K: Kernels, damping: float = 0.0) -> CEOperator:
    """The cross-entropy function-space operator of `method` on kernels `K` (module docstring).

    method: "gd", "exact" (alias "ngd"), "block_diagonal" ("bd"), "block_tridiagonal" ("btd") or
    `ntkngd.block_pattern(S)`; "kfac" / "unit_wise" raise NotImplementedError. damping rho >= 0 is
    added to the Fisher in parameter space (N rho I in the dual space). rho = 0 takes the
    minimum-norm limit, which needs infinite-width kernels (kron_outputs).
    """
    if not isinstance(K, Kernels):
        raise TypeError(f"K must be an ntkngd.Kernels (from analytic_kernels or empirical_kernels), "
                        f"got {type(K).__name__}")
    damping = _checks.non_negative(damping, "damping")
    c = int(K.out_dim)
    if c < 2:
        raise ValueError(f"cross-entropy needs C >= 2 outputs; the network has out_dim = {c}")
    if isinstance(method, BlockPattern):
        pattern, name = method, method.name
        if pattern.depth != K.depth:
            raise ValueError(f"block pattern is {pattern.depth} x {pattern.depth} but the network "
                             f"has {K.depth} layers")
    else:
        name = canonical(method)
        if name in _NOT_FOR_CE:
            raise NotImplementedError(
                f"{_NOT_FOR_CE[name]} with cross-entropy is not implemented in function space: its "
                "Kronecker/unit factors do not commute with the per-sample softmax Hessian Hs, so "
                "no kernel-level formula exists here (THEORY.md: open); use the finite-width "
                "parameter-space implementation")
        pattern = {"gd": None, "exact": patterns.full(K.depth),
                   "block_diagonal": patterns.diagonal(K.depth),
                   "block_tridiagonal": patterns.tridiagonal(K.depth)}[name]
    kron = bool(K.kron_outputs)
    n, n_test = K.n_train, K.n_test
    common = dict(name=name, damping=damping, out_dim=c, n_train=n, n_test=n_test, kron=kron)
    if pattern is None:          # GD: G = Theta / N
        train = np.asarray(K.ntk_train, np.float64) / n
        test = None if not K.has_test else np.asarray(K.ntk_test, np.float64) / n
        return CEOperator(train=jnp.asarray(train), test=None if test is None else jnp.asarray(test),
                          pattern=None, kind="gd", alpha=None, **common)
    S = pattern.matrix
    in_range = patterns.ones_in_range(S)
    alpha = patterns.alpha(S) if in_range else None
    if damping == 0:
        if not kron:
            raise ValueError("cross-entropy NGD with damping = 0 needs infinite-width kernels "
                             "(kron_outputs=True): on finite-width kernels the all-ones direction "
                             "of Hs couples to the kernel; pass damping > 0")
        op = mse_operator(pattern, K, 0.0)    # minimum-norm limit (raises if 1 not in range(S))
        return CEOperator(train=jnp.asarray(op.train),
                          test=None if op.test is None else jnp.asarray(op.test), pattern=None,
                          kind="pinv", alpha=alpha, notes=op.notes, **common)
    notes = []
    if not in_range:
        msg = ("1 is not in the range of the block pattern S: the damped cross-entropy update "
               "diverges as damping -> 0")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    if np.linalg.eigvalsh(S).min() < -1e-12:
        # F_S is indefinite; (S (x) Hs) Kb has negative eigenvalues that shrink with Hs as the
        # flow converges and can cross -N rho: F_S + rho I turns singular along the trajectory.
        notes.append("S is indefinite (e.g. BTD, L >= 3): with damping > 0 the damped Fisher "
                     "F_S + rho I can become singular along the cross-entropy flow (the solver "
                     "then stops); damping = 0 (the minimum-norm limit) has no such point")
    notes = tuple(notes)
    blocks = np.asarray(K.blocks_train, np.float64)
    tblocks = None if not K.has_test else np.asarray(K.blocks_test, np.float64)
    if S.shape[0] == 1 or np.all(S == 1):     # exact NGD: one block, the total NTK
        train = _full(blocks.sum(0), c, kron)
        test = None if tblocks is None else _full(tblocks.sum(0), c, kron)
        return CEOperator(train=jnp.asarray(train), test=None if test is None else jnp.asarray(test),
                          pattern=None, kind="damped_exact", alpha=alpha, notes=notes, **common)
    train = np.stack([_full(b, c, kron) for b in blocks])
    test = None if tblocks is None else np.stack([_full(b, c, kron) for b in tblocks])
    return CEOperator(train=jnp.asarray(train), test=None if test is None else jnp.asarray(test),
                      pattern=jnp.asarray(S), kind="damped_pattern", alpha=alpha, notes=notes,
                      **common)


# ----------------------------------------------------------------------------- integrators
def _state0(f0_train, f0_test, c):
    f0 = jnp.asarray(f0_train, jnp.float64)
    ft = jnp.zeros((0, c), f0.dtype) if f0_test is None else jnp.asarray(f0_test, jnp.float64)
    return f0, ft


def _velocity(apply, residual, y, lr, f, ft):
    d_train, d_test = apply(f, residual(f, y))
    d_test = jnp.zeros_like(ft) if d_test is None or ft.shape[0] == 0 else d_test
    return -lr * d_train, -lr * d_test


@eqx.filter_jit
def _flow(apply, residual, f0, ft0, y, lr, ts, rtol, atol, max_steps):
    def field(t, state, args):
        return _velocity(apply, residual, y, lr, *state)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=ts[-1], dt0=None, y0=(f0, ft0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=True)
    return sol.ys, sol.stats["num_steps"]


@eqx.filter_jit
def _steps(apply, residual, f0, ft0, y, lr, save_at):
    """Iterate the map up to max(save_at) (a traced bound: one compilation per number of saved
    points, not per number of steps), keeping the states at the step indices save_at."""
    def save(k, f, ft, bufs):
        hit = (save_at == k)[:, None, None]
        return jnp.where(hit, f[None], bufs[0]), jnp.where(hit, ft[None], bufs[1])

    bufs0 = save(0, f0, ft0, (jnp.zeros((len(save_at),) + f0.shape, f0.dtype),
                              jnp.zeros((len(save_at),) + ft0.shape, f0.dtype)))

    def body(k, carry):
        f, ft, bufs = carry
        df, dft = _velocity(apply, residual, y, lr, f, ft)
        f, ft = f + df, ft + dft
        return f, ft, save(k + 1, f, ft, bufs)

    _, _, bufs = jax.lax.fori_loop(0, jnp.max(save_at), body, (f0, ft0, bufs0))
    return bufs


def _times(times) -> np.ndarray:
    t = _checks.as_array(times, "times", ndim=1).astype(np.float64)
    if np.any(t < 0):
        raise ValueError("time points must be >= 0")
    if np.any(np.diff(t) < 0):
        raise ValueError("time points must be sorted in increasing order")
    return t


def integrate_flow(apply: Callable, residual: Callable, f0_train: Any, y_train: Any,
                   f0_test: Any = None, *, lr: float = 1.0, times: Any,
                   rtol: float = 1e-9, atol: float = 1e-11, max_steps: int = 100_000):
    """Integrate df/dtau = -lr G(f) r(f), df'/dtau = -lr G'(f) r(f) with diffrax (Tsit5, PID).

    apply(f, r) -> (G r (N, C), G' r (N', C) or None): a `CEOperator`, `LinearOperator` or any
    JAX-traceable callable (an equinox Module or a module-level function, so jit can cache it).
    residual(f, y) -> r: `ce_residual` (softmax(f) - y) or `mse_residual` (f - y).
    times: sorted time points tau >= 0 (tau = 0 returns f0). Returns (t, train (T, N, C),
    test (T, N', C) or None, number of accepted+rejected solver steps).
    """
    t = _times(times)
    lr = _checks.positive(lr, "lr")
    apply = apply.core() if isinstance(apply, CEOperator) else apply
    f0 = jnp.asarray(f0_train, jnp.float64)
    c = f0.shape[-1]
    f0, ft0 = _state0(f0, f0_test, c)
    y = jnp.asarray(y_train, jnp.float64)
    if t[-1] == 0:
        tr = jnp.broadcast_to(f0, (len(t),) + f0.shape)
        te = jnp.broadcast_to(ft0, (len(t),) + ft0.shape)
        n_steps = 0
    else:
        (tr, te), n_steps = _flow(apply, residual, f0, ft0, y, jnp.float64(lr), jnp.asarray(t),
                                  jnp.float64(rtol), jnp.float64(atol),
                                  _checks.positive_int(max_steps, "max_steps"))
    return (t, np.asarray(tr), None if f0_test is None else np.asarray(te), int(n_steps))


def iterate_steps(apply: Callable, residual: Callable, f0_train: Any, y_train: Any,
                  f0_test: Any = None, *, lr: float = 1.0, steps: Any):
    """The discrete map f_{t+1} = f_t - lr G(f_t) r(f_t) (and f'_{t+1} = f'_t - lr G'(f_t) r(f_t)).

    steps: an int T (returns t = 0..T) or a sequence of step indices. Returns (t, train, test)."""
    lr = _checks.positive(lr, "lr")
    apply = apply.core() if isinstance(apply, CEOperator) else apply
    if np.ndim(steps) == 0:
        t = np.arange(_checks.positive_int(steps, "steps") + 1)
    else:
        t = _checks.as_array(steps, "steps", ndim=1)
        if np.any(t < 0) or np.any(t != np.round(t)):
            raise ValueError("steps must be non-negative integers")
        t = t.astype(int)
    f0 = jnp.asarray(f0_train, jnp.float64)
    f0, ft0 = _state0(f0, f0_test, f0.shape[-1])
    y = jnp.asarray(y_train, jnp.float64)
    tr, te = _steps(apply, residual, f0, ft0, y, jnp.float64(lr), jnp.asarray(t, jnp.int64))
    tr, te = np.asarray(tr), np.asarray(te)
    return t.astype(np.float64), tr, None if f0_test is None else te


# ----------------------------------------------------------------------------- public predictor
@dataclass(frozen=True)
class CETrajectory:
    """Outputs, cross-entropy losses and accuracies at the requested times (leading axis T).

    t: continuous times tau (continuous=True) or step indices. test_* are None without f0_test;
    test_loss / test_accuracy need y_test. solver_steps: diffrax steps (0 for the discrete map).
    """

    t: np.ndarray
    train: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test: Optional[np.ndarray] = None
    test_loss: Optional[np.ndarray] = None
    test_accuracy: Optional[np.ndarray] = None
    continuous: bool = True
    lr: float = 1.0
    method: str = ""
    alpha: Optional[float] = None
    damping: float = 0.0
    solver_steps: int = 0


def ce_predict(method: Union[str, BlockPattern, CEOperator], K: Optional[Kernels],
               f0_train: Any, y_train: Any, f0_test: Any = None, *, y_test: Any = None,
               lr: float = 1.0, times: Any = None, steps: Any = None, damping: float = 0.0,
               rtol: float = 1e-9, atol: float = 1e-11, max_steps: int = 100_000) -> CETrajectory:
    """Cross-entropy training dynamics of `method` in function space on kernels `K`.

    method: a name ("gd", "exact", "block_diagonal", "block_tridiagonal", aliases), a
    `ntkngd.block_pattern(S)`, or a prebuilt `CEOperator` (then K may be None and damping is the
    operator's). f0_train (N, C) initial training outputs, y_train one-hot (N, C) with
    C = out_dim >= 2; f0_test (N', C) optional, y_test (one-hot) adds test loss/accuracy.
    times: continuous times tau of the flow df/dtau = -lr G_CE(f)(p - y) (diffrax, tolerances
    rtol/atol); steps: an int T or step indices of the discrete map f_{t+1} = f_t - lr G_CE (p_t - y).
    lr: the learning rate (default 1; 1/alpha normalises NGD-type methods to alpha = 1).
    """
    if isinstance(method, CEOperator):
        op = method
    else:
        op = ce_operator(method, K, damping)
    if (steps is None) == (times is None):
        raise ValueError("give exactly one of times (continuous flow) or steps (discrete map)")
    c, n = op.out_dim, op.n_train
    y = check_one_hot(y_train, "y_train", n, c)
    f0 = _checks.outputs(f0_train, "f0_train", n, c)
    f0t = None
    if f0_test is not None:
        if op.test is None:
            raise ValueError("the kernels have no test points (analytic_kernels(net, x_train, "
                             "x_test)); call ce_predict without f0_test")
        f0t = _checks.outputs(f0_test, "f0_test", op.n_test, c)
    yt = None if y_test is None else check_one_hot(y_test, "y_test", op.n_test, c)
    if yt is not None and f0t is None:
        raise ValueError("y_test given without f0_test")
    if times is not None:
        t, tr, te, n_steps = integrate_flow(op, ce_residual, f0, y, f0t, lr=lr, times=times,
                                            rtol=rtol, atol=atol, max_steps=max_steps)
        continuous = True
    else:
        t, tr, te = iterate_steps(op, ce_residual, f0, y, f0t, lr=lr, steps=steps)
        n_steps, continuous = 0, False
    loss, acc = np.asarray(cross_entropy(tr, y[None])), np.asarray(accuracy(tr, y[None]))
    tl = ta = None
    if yt is not None:
        tl, ta = np.asarray(cross_entropy(te, yt[None])), np.asarray(accuracy(te, yt[None]))
    return CETrajectory(t, tr, loss, acc, te, tl, ta, continuous, float(lr), op.name, op.alpha,
                        op.damping, n_steps)


# ----------------------------------------------------------------------------- finite width, rho -> 0
# (added for the finite-width engine, ntkngd/ce_engine.py)
def complement_basis(c: int) -> np.ndarray:
    """Orthonormal basis U_C (C, C-1) of the complement of the all-ones vector in R^C (Helmert):
    U_C^T 1 = 0, U_C^T U_C = I, U_C U_C^T = I - 1 1^T / C."""
    c = int(c)
    u = np.zeros((c, c - 1))
    for k in range(1, c):
        u[:k, k - 1] = 1.0
        u[k, k - 1] = -float(k)
        u[:, k - 1] /= np.sqrt(k * (k + 1.0))
    return u


def project_blocks(blocks: Any, c: int) -> np.ndarray:
    """U^T Theta_l U for sample-major blocks (..., N C, N C), U = I_N (x) U_C: the blocks restricted
    to the logit directions that change the softmax ((..., N (C-1), N (C-1)))."""
    b = np.asarray(blocks, np.float64)
    n = b.shape[-1] // c
    uc = complement_basis(c)
    b5 = b.reshape(b.shape[:-2] + (n, c, n, c))
    out = np.einsum("...acbd,ci,dj->...aibj", b5, uc, uc)
    return out.reshape(b.shape[:-2] + (n * (c - 1), n * (c - 1)))


def _resolve_pattern(method, depth: int):
    """(name, BlockPattern or None for GD); K-FAC / unit-wise raise NotImplementedError."""
    if isinstance(method, BlockPattern):
        if method.depth != depth:
            raise ValueError(f"block pattern is {method.depth} x {method.depth} but the network "
                             f"has {depth} layers")
        return method.name, method
    name = canonical(method)
    if name in _NOT_FOR_CE:
        raise NotImplementedError(
            f"{_NOT_FOR_CE[name]} with cross-entropy has no function-space operator (THEORY.md: "
            "open); use ntkngd.ce_engine (finite-width parameter space)")
    pattern = {"gd": None, "exact": patterns.full(depth),
               "block_diagonal": patterns.diagonal(depth),
               "block_tridiagonal": patterns.tridiagonal(depth)}[name]
    return name, pattern


def min_norm_duals(blocks: Any, S: np.ndarray, c: int, rhs: np.ndarray,
                   factors: Optional[list] = None) -> tuple[np.ndarray, list]:
    """rho -> 0 limit of the damped cross-entropy pattern system on finite-width blocks.

    The damped update Delta theta_l = -lr J_l^T v_l, [(S (x) I) blockdiag(Hs Theta_l) + N rho] v =
    1 (x) r tends, as rho -> 0, to the parameter-space minimum-norm solution: minimise
    sum_l w_l^T Theta_l^{-1} w_l (w_l = Theta_l v_l) subject to (S (x) Hs) w = 1 (x) r. With
    U = I_N (x) U_C (`complement_basis`) and Hs = U Ht U^T (Ht invertible when every p > 0) the
    constraint reads (S (x) U^T) w = 1 (x) z', z' = U^T Hs^+ r; minimising first over the span(1)
    part of each w_l (a partial minimisation of a quadratic form in Theta_l^{-1} leaves the
    inverse of the sub-block U^T Theta_l U) leaves the MSE pattern problem on the projected blocks
    Theta'_l = U^T Theta_l U with right-hand side z'. So
        v_l = U v'_l,   v' = MSE pattern duals of (Theta'_l, S) for z' (patterns.duals, rho = 0),
    and sum_l U^T Theta_l v_l = (1^T S^+ 1) z': the training step is alpha Hs^+ r up to a
    per-sample shift of all logits (which leaves the softmax, loss and accuracy unchanged), at
    any width. blocks: (L, N C, N C) sample-major (exact NGD: pass the total NTK as one block with
    S = [[1]]); rhs: (N (C-1), k) in the projected coordinates. Returns v' (L, N (C-1), k), notes.
    """
    pb = project_blocks(blocks, c)
    return patterns.duals(pb, np.asarray(S, float), pb.shape[-1] // (c - 1), 0.0, rhs, factors)


def ce_min_norm_operator(method: Union[str, BlockPattern], K: Kernels) -> CEOperator:
    """The rho -> 0 cross-entropy operator on finite-width kernels (kron_outputs=False), which
    `ce_operator` refuses: G_CE(f) r = M Hs(f)^+ r with the constant matrices
        M = sum_l Theta_l U V'_l U^T,   M' = sum_l Theta_l(X', X) U V'_l U^T,
    V'_l the MSE pattern duals of the projected blocks U^T Theta_l U (rhs = I; `min_norm_duals`).
    On training points U^T M = alpha U^T (alpha = 1^T S^+ 1): the finite-width linearized CE
    dynamics of every pattern equal the infinite-width alpha Hs^+ flow up to per-sample logit
    shifts; the test operator M' is the width-dependent part. GD: `ce_operator("gd", K)`.
    Infinite-width kernels are passed on to ce_operator(method, K, 0). Returns a CEOperator of
    kind "pinv" (kron False) usable with ce_predict / iterate_steps / integrate_flow.
    """
    if not isinstance(K, Kernels):
        raise TypeError(f"K must be an ntkngd.Kernels, got {type(K).__name__}")
    if K.kron_outputs:
        return ce_operator(method, K, 0.0)
    c = int(K.out_dim)
    if c < 2:
        raise ValueError(f"cross-entropy needs C >= 2 outputs; the network has out_dim = {c}")
    name, pattern = _resolve_pattern(method, K.depth)
    if pattern is None:
        return ce_operator("gd", K, 0.0)
    S = pattern.matrix
    if not patterns.ones_in_range(S):
        raise ValueError("1 is not in the range of the block pattern S: the undamped "
                         "cross-entropy update does not exist; use damping > 0")
    blocks = np.asarray(K.blocks_train, np.float64)
    tblocks = None if not K.has_test else np.asarray(K.blocks_test, np.float64)
    exact = S.shape[0] == 1 or bool(np.all(S == 1))
    if exact:
        blocks, S = blocks.sum(0)[None], np.ones((1, 1))
        tblocks = None if tblocks is None else tblocks.sum(0)[None]
    n = K.n_train
    u = np.kron(np.eye(n), complement_basis(c))                    # (N C, N (C-1))
    v, notes = min_norm_duals(blocks, S, c, np.eye(u.shape[1]))     # (L, k, k)
    w = np.einsum("ai,lij,bj->lab", u, v, u)                        # U V'_l U^T
    train = np.einsum("lab,lbc->ac", blocks, w)
    test = None if tblocks is None else np.einsum("lab,lbc->ac", tblocks, w)
    return CEOperator(name=name, kind="pinv", train=jnp.asarray(train),
                      test=None if test is None else jnp.asarray(test), pattern=None,
                      alpha=patterns.alpha(S), damping=0.0, out_dim=c, n_train=n,
                      n_test=K.n_test, kron=False,
                      notes=tuple(notes) + ("finite-width rho -> 0 limit (minimum-norm)",))


__all__ += ["complement_basis", "project_blocks", "min_norm_duals", "ce_min_norm_operator"]
