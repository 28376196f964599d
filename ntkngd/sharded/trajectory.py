"""`predict` for sharded operators: train and test trajectories at given times and at t = inf.

With g = f_0 - y, the dense dynamics (ntkngd.dynamics) are r(t) = phi_t(G) g and
f'(t) = f'_0 - G' psi_t(G) g (phi, psi: `dynamics.closed_form.step_functions`, discrete or
continuous).
  isotropic G = alpha I:  scalars phi_t(alpha), psi_t(alpha) and one product G' g;
  diagonal G:             per sample, then G' on all time points' columns at once;
  symmetric G:            phi_t(G) g and psi_t(G) g by Lanczos (krylov.apply_functions, relative
                          tolerance krylov.default_tol), G' on all time points at once.
t = inf is the fixed point of the flow, as in the dense path (dynamics.closed_form.fixed_point):
f_inf = y + (I - G G^D) g, f'_inf = f'_0 - G' G^D g, where G^D inverts G on its eigenvalues above
RANK_CUT x the largest and is 0 on the rest. Here G is positive definite (isotropic, a positive
diagonal, or certified by its Cholesky factor and lambda_min / lambda_max > RANK_CUT: otherwise
NotImplementedError), so G^D = G^{-1}; a diagonal G uses the cut entry by entry. Time points are
checked by the dense path's `_time_points` (times only for t = inf). No N x N matrix is formed: the operators apply G and G' through the sharded kernels.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _checks
from ..dynamics.closed_form import step_functions as _step_functions
from ..dynamics.trajectory import Trajectory, _time_points, mse
from ..losses import accuracy_or_nan, get_loss
from . import krylov

RANK_CUT = 1e-8     # as the dense figures.generalization.RANK_CUT: modes below it are G's null space


def _spectral(op: Any, t: np.ndarray, lr: float, continuous: bool, g: np.ndarray):
    """(phi_t(G) g, psi_t(G) g) for finite t, each (T, N, C)."""
    phi, psi = _step_functions(t, lr, continuous)
    real = lambda a: np.real(a)                      # noqa: E731  (discrete: complex powers)
    if op.kind == "isotropic":
        lam = np.array([op.diag[0]])
        return real(phi(lam))[:, :, None] * g[None], real(psi(lam))[:, :, None] * g[None]
    if op.kind == "diagonal":
        return real(phi(op.diag))[:, :, None] * g[None], real(psi(op.diag))[:, :, None] * g[None]
    fns = [lambda lam: real(phi(lam)), lambda lam: real(psi(lam))]
    out = krylov.apply_functions(op.train_apply, g, fns, krylov.default_tol(op.compute_dtype))
    return out[0], out[1]


def _fixed_point(op: Any, g: np.ndarray):
    """(residual, G^D g) at t = inf (module docstring), each (N, C)."""
    if op.kind == "symmetric":     # a 1% estimate of lambda_min (from above) decides the cut
        top, low = op.largest_eigenvalue, op.lowest(1e-2)
        if not np.isnan(low) and low <= RANK_CUT * top:
            raise NotImplementedError(f"{op.name}: G has eigenvalues below {RANK_CUT:g} x the "
                                      "largest (a numerical null space); use the dense path")
        lam = np.array([low if not np.isnan(low) else top, top])
        d = None
    else:
        d = op.diag
        lam = d
    kept = lam > RANK_CUT * np.max(np.abs(lam))
    if np.any(lam[kept] <= 0):
        raise ValueError(f"{op.name}: G has a negative eigenvalue: the flow diverges")
    if d is None:
        return np.zeros_like(g), op.pinv_apply(g)
    keep = kept[:, None]
    return np.where(keep, 0.0, g), np.where(keep, g / np.where(keep, d[:, None], 1.0), 0.0)


def predict(op: Any, f0_train: Any, y_train: Any, f0_test: Any = None, *,
            lr: Optional[float] = None, steps: Any = None, times: Any = None,
            continuous: bool = False, y_test: Any = None, **solver) -> Trajectory:
    """`ntkngd.predict` for a `ShardedOperator` (module docstring); times/steps may contain
    np.inf (the fixed point). Returns the dense path's `Trajectory`."""
    if not getattr(op, "is_sharded", False):     # (no import of .base: it imports this module)
        raise TypeError(f"op must be a ShardedOperator, got {type(op).__name__}")
    if solver:
        raise TypeError(f"solver options {sorted(solver)} apply to a loss flow; the sharded "
                        "backend has the MSE (linear) flow only")
    t, continuous = _time_points(steps, times, continuous)
    lr = op.lr if lr is None else _checks.positive(lr, "lr")
    if y_test is not None and f0_test is None:
        raise ValueError("y_test given without f0_test: give the test outputs f0_test too")
    n, c = op.n_train, op.out_dim
    f0 = _checks.outputs(f0_train, "f0_train", n, c)
    y = _checks.outputs(y_train, "y_train", n, c)
    want_test = f0_test is not None
    if want_test and not op.has_test:
        raise ValueError(f"operator {op.name!r} has no test operator; build the kernels with "
                         "x_test or call predict without f0_test")
    f0t = _checks.outputs(f0_test, "f0_test", op.n_test, c) if want_test else None
    g = f0 - y
    T = len(t)
    res = np.zeros((T, n, c))
    acc = np.zeros((T, n, c))                        # psi_t(G) g, then G^D g at t = inf
    scalars = np.zeros(T) if op.kind == "isotropic" else None
    fin = np.isfinite(t)
    if fin.any():
        res[fin], acc[fin] = _spectral(op, t[fin], lr, continuous, g)
        if scalars is not None:
            scalars[fin] = np.real(_step_functions(t[fin], lr, continuous)[1](op.diag[:1]))[:, 0]
    if (~fin).any():
        r_inf, s_inf = _fixed_point(op, g)
        res[~fin], acc[~fin] = r_inf, s_inf
        if scalars is not None:
            scalars[~fin] = 1.0 / op.diag[0]
    train = y[None] + res
    test = test_loss = test_acc = None
    if want_test and scalars is not None:     # isotropic: psi_t(alpha) G' g, one product
        test = f0t[None] - scalars[:, None, None] * op.test_apply(g)[None]
    elif want_test:
        cols = np.ascontiguousarray(acc.transpose(1, 0, 2)).reshape(n, T * c)
        moved = op.test_apply(cols).reshape(-1, T, c).transpose(1, 0, 2)
        test = f0t[None] - moved
    L = get_loss("mse")
    if want_test and y_test is not None:
        yt = _checks.outputs(y_test, "y_test", op.n_test, c)[None]
        test_loss, test_acc = mse(test, yt), accuracy_or_nan(L, test, yt)
    return Trajectory(t, train, mse(train, y[None]), test, test_loss, continuous, float(lr),
                      accuracy_or_nan(L, train, y[None]), test_acc, op.name, op.alpha_theory,
                      float(op.damping))
