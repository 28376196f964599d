"""Cross-entropy (softmax) in function space: the v0.1 names, now thin wrappers over the one engine.

The loss is `ntkngd.losses.softmax_cross_entropy` (C >= 2, one-hot targets, Loss = (1/N) sum_n
-sum_c y_nc log softmax(f_n)_c, residual r = p - y, output Hessian Hs = diag(p) - p p^T); operators
and dynamics for every loss live in `ntkngd.loss_dynamics` and `ntkngd.flows`. New code should call
`ntkngd.operator(method, K, damping, loss=...)` and `ntkngd.predict(op, ...)`; these names keep
working (`ce_operator`, `ce_predict`, `ce_min_norm_operator`, `CEOperator`, ...).

Relation to `neural_tangents.predict.gradient_descent(loss, k, y, learning_rate=eta,
trace_axes=(-1,))` with loss(fx, y) = -sum(y * log_softmax(fx)) / N: it integrates
df/dt = -eta Theta (p - y) / N, i.e. GD here with lr = eta and tau = t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from .flows import integrate_flow, iterate_steps
from .function_space import Operator
from .kernels import Kernels
from .loss_dynamics import LossOperator, _mul, loss_operator, min_norm_operator
from .losses import accuracy_or_nan, complement_basis, softmax_cross_entropy
from .methods import BlockPattern, get_method

__all__ = ["CEOperator", "LinearOperator", "CETrajectory", "ce_operator", "ce_predict",
           "linear_operator", "integrate_flow", "iterate_steps", "ce_residual", "mse_residual",
           "softmax_hessian", "softmax_hessian_pinv", "cross_entropy", "accuracy",
           "check_one_hot", "complement_basis", "project_blocks", "min_norm_duals",
           "ce_min_norm_operator", "loss_predict"]

CEOperator = LossOperator
_CE = softmax_cross_entropy


def softmax_hessian(p: Any) -> jnp.ndarray:
    """diag(p) - p p^T over the last axis: (..., C) probabilities -> (..., C, C)."""
    p = jnp.asarray(p)
    return jnp.einsum("...c,cd->...cd", p, jnp.eye(p.shape[-1], dtype=p.dtype)) - \
        p[..., :, None] * p[..., None, :]


def softmax_hessian_pinv(p: Any, r: Any) -> jnp.ndarray:
    """(diag(p) - p p^T)^+ r per sample for p > 0: x = q - mean(q), q = r' / p, r' = r - mean(r).
    (From r alone; with the targets at hand use `losses.softmax_cross_entropy.pinv_residual`,
    exact for every probability.)"""
    p, r = jnp.asarray(p), jnp.asarray(r)
    q = (r - r.mean(-1, keepdims=True)) / p
    return q - q.mean(-1, keepdims=True)


def cross_entropy(f: Any, y: Any) -> jnp.ndarray:
    """(1/N) sum_n -sum_c y_nc log softmax(f_n)_c over the last two axes (points, classes)."""
    return _CE.value(jnp.asarray(f), jnp.asarray(y))


def accuracy(f: Any, y: Any) -> jnp.ndarray:
    """Fraction of points whose largest output is the labelled class (last two axes)."""
    return _CE.accuracy(f, y)


def ce_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """softmax(f) - y (N times the cross-entropy gradient in f)."""
    return jax.nn.softmax(f, axis=-1) - y


def mse_residual(f: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """f - y (the residual of Loss = 1/(2N) sum ||f - y||^2)."""
    return f - y


def check_one_hot(y: Any, name: str, n: Optional[int], c: int) -> np.ndarray:
    """Validate one-hot targets of shape (n, c); returns a float array."""
    return _CE.validate(y, name, n, c)


class LinearOperator(eqx.Module):
    """A constant function-space operator (G, G') as an `op(f, r)` callable: (G r, G' r)."""

    train: jnp.ndarray
    test: Optional[jnp.ndarray]
    kron: bool = eqx.field(static=True)

    def __call__(self, f: jnp.ndarray, r: jnp.ndarray):
        return _mul(self.train, r, self.kron), \
            None if self.test is None else _mul(self.test, r, self.kron)


def linear_operator(op: Operator) -> LinearOperator:
    """Wrap an MSE `ntkngd.Operator` for `integrate_flow` / `iterate_steps`."""
    if not isinstance(op, Operator):
        raise TypeError(f"op must be an ntkngd Operator, got {type(op).__name__}")
    test = None if op.test is None else jnp.asarray(op.test)
    return LinearOperator(jnp.asarray(op.train), test, bool(op.kron_outputs))


def _kernels(K):
    if not isinstance(K, Kernels):
        raise TypeError(f"K must be an ntkngd.Kernels (from analytic_kernels or empirical_kernels), "
                        f"got {type(K).__name__}")
    return K


def ce_operator(method: Union[str, BlockPattern], K: Kernels, damping: float = 0.0) -> CEOperator:
    """The cross-entropy operator of `method` on K (`ntkngd.loss_dynamics`). rho = 0 takes the
    minimum-norm limit, which here needs infinite-width kernels (see `ce_min_norm_operator`)."""
    K = _kernels(K)
    damping = _checks.non_negative(damping, "damping")
    _CE.check_outputs(int(K.out_dim))
    if damping == 0 and not K.kron_outputs and get_method(method).kind != "gd":
        raise ValueError("cross-entropy NGD with damping = 0 needs infinite-width kernels "
                         "(kron_outputs=True) here; pass damping > 0 or use "
                         "ce_min_norm_operator / ntkngd.operator(..., loss='ce')")
    return loss_operator(get_method(method), K, damping, _CE)


def ce_min_norm_operator(method: Union[str, BlockPattern], K: Kernels) -> CEOperator:
    """The rho -> 0 cross-entropy operator on finite-width kernels (infinite-width kernels are
    passed on to ce_operator(method, K, 0)); see `loss_dynamics.min_norm_operator`."""
    K = _kernels(K)
    _CE.check_outputs(int(K.out_dim))
    if K.kron_outputs:
        return ce_operator(method, K, 0.0)
    return min_norm_operator(get_method(method), K, _CE)


def project_blocks(blocks: Any, c: int) -> np.ndarray:
    """U^T Theta_l U for sample-major blocks (..., N C, N C), U = I_N (x) U_C."""
    from .methods.dual_solve import project
    b = jnp.asarray(blocks, jnp.float64)
    lead = b.shape[:-2]
    out = project(b.reshape((-1,) + b.shape[-2:]), complement_basis(c))
    return np.asarray(out).reshape(lead + out.shape[-2:])


def min_norm_duals(blocks: Any, S: np.ndarray, c: int, rhs: np.ndarray, factors=None):
    """MSE pattern duals of the projected blocks U^T Theta_l U for rhs (N (C-1), k)."""
    from .methods.dual_solve import pattern_duals
    pb = jnp.asarray(project_blocks(blocks, c))
    v, notes = pattern_duals(pb, np.asarray(S, float), pb.shape[-1] // (c - 1), 0.0,
                             jnp.asarray(rhs, pb.dtype), factors)
    return np.asarray(v), notes


@dataclass(frozen=True)
class CETrajectory:
    """Outputs, losses and accuracies at the requested times (leading axis T); test_* None
    without f0_test (losses/accuracies need y_test). solver_steps: diffrax steps (0: discrete)."""

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


def loss_predict(op: LossOperator, f0_train: Any, y_train: Any, f0_test: Any = None, *,
                 y_test: Any = None, lr: float = 1.0, times: Any = None, steps: Any = None,
                 rtol: float = 1e-9, atol: float = 1e-11,
                 max_steps: int = 100_000) -> CETrajectory:
    """Dynamics of a `LossOperator`: times -> the flow df/dtau = -lr G(f) r (diffrax); steps ->
    the discrete map (module docstring of ntkngd.flows)."""
    if (steps is None) == (times is None):
        raise ValueError("give exactly one of times (continuous flow) or steps (discrete map)")
    L, c, n = op.loss, op.out_dim, op.n_train
    y = L.validate(y_train, "y_train", n, c)
    f0 = _checks.outputs(f0_train, "f0_train", n, c)
    f0t = None
    if f0_test is not None:
        if op.test is None:
            raise ValueError("the kernels have no test points (analytic_kernels(net, x_train, "
                             "x_test)); call without f0_test")
        f0t = _checks.outputs(f0_test, "f0_test", op.n_test, c)
    yt = None if y_test is None else L.validate(y_test, "y_test", op.n_test, c)
    if yt is not None and f0t is None:
        raise ValueError("y_test given without f0_test: give the test outputs f0_test too")
    core = op.core()
    if times is not None:
        t, tr, te, n_steps = integrate_flow(core, None, f0, y, f0t, lr=lr, times=times,
                                            rtol=rtol, atol=atol, max_steps=max_steps)
        continuous = True
    else:
        t, tr, te = iterate_steps(core, None, f0, y, f0t, lr=lr, steps=steps)
        n_steps, continuous = 0, False
    loss, acc = np.asarray(L.value(tr, y[None])), accuracy_or_nan(L, tr, y[None])
    tl = ta = None
    if yt is not None:
        tl, ta = np.asarray(L.value(te, yt[None])), accuracy_or_nan(L, te, yt[None])
    return CETrajectory(t, tr, loss, acc, te, tl, ta, continuous, float(lr), op.name, op.alpha,
                        op.damping, n_steps)


def ce_predict(method: Union[str, BlockPattern, CEOperator], K: Optional[Kernels],
               f0_train: Any, y_train: Any, f0_test: Any = None, *, y_test: Any = None,
               lr: float = 1.0, times: Any = None, steps: Any = None, damping: float = 0.0,
               rtol: float = 1e-9, atol: float = 1e-11, max_steps: int = 100_000) -> CETrajectory:
    """Cross-entropy training dynamics of `method` in function space on kernels `K`.

    method: a name, a `ntkngd.block_pattern(S)`, or a prebuilt `CEOperator` (then K may be None).
    f0_train (N, C), y_train one-hot (N, C), C >= 2; f0_test (N', C) optional, y_test adds test
    loss/accuracy. times: continuous times of the flow (diffrax, rtol/atol); steps: an int T or
    step indices of the discrete map. lr: the learning rate (1/alpha normalises to alpha = 1).
    """
    op = method if isinstance(method, LossOperator) else ce_operator(method, K, damping)
    return loss_predict(op, f0_train, y_train, f0_test, y_test=y_test, lr=lr, times=times,
                        steps=steps, rtol=rtol, atol=atol, max_steps=max_steps)
