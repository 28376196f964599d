"""Training dynamics in function space for a fixed operator (MSE loss).

Discrete steps (t = 0, 1, 2, ...):  g_{t+1} = (I - lr G) g_t,   f'_{t+1} = f'_t - lr G' g_t,
so  g_t = (I - lr G)^t g_0  and  f'_t = f'_0 - G' [(I - (I - lr G)^t) G^{-1}] g_0.
Continuous time tau (df/dtau = -lr G g):  g(tau) = exp(-lr G tau) g_0,
f'(tau) = f'_0 - G' [(I - exp(-lr G tau)) G^{-1}] g_0.   (Both well defined for singular G.)
Isotropic G = alpha I: g_t = (1 - lr alpha)^t g_0 and exp(-lr alpha tau) g_0.
Loss = 1/(2N) sum_n ||f(x_n) - y_n||^2.

Relation to `neural_tangents.predict.gradient_descent_mse(k, y, learning_rate=eta)`: it integrates
df/dt = -eta Theta (f - y) / (N C) (mean over all N C targets), so its time t at rate eta equals
GD here (G = Theta / N) at continuous time tau = t with lr = eta / C.

`predict` evaluates isotropic G as a scalar and diagonal G (exactly zero off the diagonal) sample
by sample, with one product with G' for all time points. Otherwise, discrete steps up to
t_max <= m (and no decomposition of G cached yet) are iterated, one product with G per step and
one product with G' for all time points together (O(t_max m^2), no eigendecomposition);
continuous time and longer horizons decompose G once (eigh for symmetric G, eig otherwise) and
then cost O(m^2) per time point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _checks
from .function_space import Operator

# Relative deviation ||G - alpha I|| / ||alpha I|| below which G is treated as exactly alpha I.
ISOTROPIC_TOL = 1e-12
_EIG_COND_MAX = 1e10


@dataclass(frozen=True)
class Trajectory:
    """Outputs and losses at the requested time points (leading axis T)."""

    t: np.ndarray
    train: np.ndarray
    train_loss: np.ndarray
    test: Optional[np.ndarray] = None
    test_loss: Optional[np.ndarray] = None
    continuous: bool = False
    lr: float = 1.0


def mse(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1/(2N) sum ||f - y||^2 over the last two axes (points, outputs)."""
    return 0.5 * np.sum((f - y) ** 2, axis=(-2, -1)) / f.shape[-2]


class _Propagator:
    """Evaluates phi(G) r and G' psi(G) r for the step/flow functions phi, psi."""

    def __init__(self, op: Operator, r0: np.ndarray):
        g = op.train
        self.alpha = self.diag = None
        self.dense = None
        if op.deviation <= ISOTROPIC_TOL:
            self.alpha = op.alpha
            self.r0 = r0
            self.test_r0 = None if op.test is None else op.test @ r0
            return
        if op.is_diagonal:   # eigenpairs (G_ii, e_i): every sample evolves on its own
            self.diag, self.r0, self.test = np.diagonal(g).copy(), r0, op.test
            return
        lam, vecs = op.eig
        if op.is_symmetric:
            inv = vecs.T
        else:
            if np.linalg.cond(vecs) > _EIG_COND_MAX:   # defective: evaluate matrix functions
                self.dense = (g, op.test, r0)
                return
            inv = np.linalg.inv(vecs)
        self.lam, self.vecs = lam, vecs
        self.coef = inv @ r0                             # (m, C)
        self.test_vecs = None if op.test is None else op.test @ vecs

    def __call__(self, phi, psi, want_test: bool):
        if self.alpha is not None:
            lam = np.array([self.alpha])
            p, q = phi(lam)[:, 0], psi(lam)[:, 0]         # (T,)
            train = p[:, None, None] * self.r0
            test = q[:, None, None] * self.test_r0 if want_test else None
            return _real(train), _real(test)
        if self.diag is not None:
            p, q = phi(self.diag), psi(self.diag)          # (T, m)
            train = _real(p)[:, :, None] * self.r0[None]
            test = _apply(self.test, _real(q)[:, :, None] * self.r0[None]) if want_test else None
            return train, test
        if self.dense is not None:
            return self._dense(phi, psi, want_test)
        p, q = phi(self.lam), psi(self.lam)               # (T, m)
        if not np.iscomplexobj(self.vecs):
            p, q = p.real, q.real
        train = _apply(self.vecs, p[:, :, None] * self.coef[None])
        test = _apply(self.test_vecs, q[:, :, None] * self.coef[None]) if want_test else None
        return _real(train), _real(test)

    def _dense(self, phi, psi, want_test):
        from scipy.linalg import funm
        g, gt, r0 = self.dense
        trains, tests = [], []
        for k in range(phi(np.zeros(1)).shape[0]):
            trains.append(funm(g, lambda z: phi(z)[k]) @ r0)
            if want_test:
                tests.append(gt @ (funm(g, lambda z: psi(z)[k]) @ r0))
        return _real(np.stack(trains)), _real(np.stack(tests)) if want_test else None


def _iterate(op: Operator, r0: np.ndarray, t: np.ndarray, lr: float, want_test: bool):
    """The discrete map by iteration: r_{s+1} = r_s - lr G r_s for s < t_max; the test change
    lr G' sum_{s<t} r_s for every requested t with one product with G' (a `FactoredMatrix` G' is
    applied by its solves, never formed)."""
    steps = t.astype(int)
    g = op.train
    rs = [r0]
    for _ in range(int(steps.max())):
        rs.append(rs[-1] - lr * (g @ rs[-1]))
    r = np.stack(rs)                                          # (t_max + 1, m, k)
    train = r[steps]
    if not want_test:
        return train, None
    partial = np.concatenate([np.zeros_like(r[:1]), np.cumsum(r[:-1], axis=0)])[steps]
    T, m, k = partial.shape
    cols = np.ascontiguousarray(partial.transpose(1, 0, 2)).reshape(m, T * k)
    dtest = lr * np.asarray(op.test @ cols).reshape(-1, T, k).transpose(1, 0, 2)
    return train, dtest


def _iterate_cheaper(op: Operator, t: np.ndarray, continuous: bool) -> bool:
    """Discrete steps, a non-isotropic, non-diagonal G with no decomposition cached and
    t_max <= m."""
    return (not continuous and op.deviation > ISOTROPIC_TOL and not op.is_diagonal
            and "eig" not in op.__dict__ and t.size > 0 and t.max() <= op.size)


def _apply(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a @ x[t] for every t as one matrix product (x: (T, m, C) -> (T, m', C))."""
    t, m, c = x.shape
    out = a @ np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(m, t * c)
    return out.reshape(-1, t, c).transpose(1, 0, 2)


def _real(a):
    if a is None or not np.iscomplexobj(a):
        return a
    return a.real


def _step_functions(t: np.ndarray, lr: float, continuous: bool):
    """phi(lam) (T, m): residual factor; psi(lam): accumulated test factor (sum of lr phi)."""
    def phi(lam):
        x = lr * np.asarray(lam)[None, :]
        tt = t[:, None]
        return np.exp(-x * tt) if continuous else np.power(1 - x + 0j, tt)

    def psi(lam):
        lam = np.asarray(lam)[None, :]
        x = lr * lam
        tt = t[:, None]
        small = np.abs(x) < 1e-12
        safe = np.where(small, 1.0, lam)
        with np.errstate(divide="ignore", invalid="ignore"):
            if continuous:
                val = -np.expm1(-x * tt) / safe
            else:   # 1 - (1 - x)^t, via expm1/log1p where x is small (no cancellation)
                xs = np.where(small, 0.0, x) + 0j
                near = np.abs(xs) < 0.5
                val = np.where(near, -np.expm1(tt * np.log1p(-np.where(near, xs, 0))),
                               1 - np.power(1 - xs, tt)) / safe
        return np.where(small, lr * tt, val)

    return phi, psi


def predict(op: Operator, f0_train: Any, y_train: Any, f0_test: Any = None, *,
            lr: Optional[float] = None, steps: Any = None, times: Any = None,
            continuous: bool = False, y_test: Any = None, **solver) -> Trajectory:
    """Train (and test) outputs and losses under the function-space dynamics of `op`.

    An `Operator` (MSE): the linear dynamics in closed form (G decomposed once). A `LossOperator`
    (`ntkngd.operator(..., loss=...)`): the nonlinear flow with diffrax (times) or the discrete
    map (steps) (returns a `cross_entropy.CETrajectory`; lr defaults to 1; solver: rtol, atol,
    max_steps). lr scales time: one step moves f by -lr G g, and
    the continuous flow is df/dtau = -lr G g, so its state at time tau with learning rate lr
    equals the state at time lr * tau with lr = 1.

    steps: an int T (evaluates t = 0..T) or a sequence of step indices (discrete map);
    times: continuous times tau (implies continuous=True); continuous=True with steps evaluates
    the flow at those times. lr defaults to op.lr (1/alpha). Outputs are (N, C) arrays
    (a 1-D vector when C = 1 is accepted); y_test adds test losses.
    """
    if getattr(op, "is_sharded", False):   # hook: sharded backend (ntkngd.sharded)
        from .sharded.trajectory import predict as sharded_predict
        return sharded_predict(op, f0_train, y_train, f0_test, lr=lr, steps=steps, times=times,
                               continuous=continuous, y_test=y_test)
    from .loss_dynamics import LossOperator
    if isinstance(op, LossOperator):   # non-quadratic loss: ODE / discrete map (ntkngd.flows)
        from .cross_entropy import loss_predict
        if continuous and times is None:
            times, steps = steps, None
        return loss_predict(op, f0_train, y_train, f0_test, y_test=y_test,
                            lr=1.0 if lr is None else lr, times=times, steps=steps, **solver)
    if not isinstance(op, Operator):
        raise TypeError(f"op must be an ntkngd Operator, got {type(op).__name__}")
    lr = op.lr if lr is None else _checks.positive(lr, "lr")
    if (steps is None) == (times is None):
        raise ValueError("give exactly one of steps (discrete) or times (continuous)")
    if y_test is not None and f0_test is None:
        raise ValueError("y_test given without f0_test: give the test outputs f0_test too")
    if times is not None:
        continuous = True
        t = _checks.as_array(times, "times", ndim=1).astype(float)
    elif np.ndim(steps) == 0:
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"steps must be a positive integer (or a sequence of step indices), "
                             f"got {steps!r}")
        t = np.arange(_checks.positive_int(steps, "steps") + 1, dtype=float)
    else:
        t = _checks.as_array(steps, "steps", ndim=1).astype(float)
    if np.any(t < 0):
        raise ValueError("time points must be >= 0")
    if not continuous and np.any(t != np.round(t)):
        raise ValueError("discrete steps must be integers (use times=... for continuous time)")
    c = op.out_dim
    n = op.n_train
    f0 = _checks.outputs(f0_train, "f0_train", n, c)
    y = _checks.outputs(y_train, "y_train", n, c)
    want_test = f0_test is not None
    if want_test and op.test is None:
        raise ValueError(f"operator {op.name!r} has no test operator G' (e.g. unit_wise on "
                         "infinite-width kernels); call predict without f0_test")
    if want_test:
        n_test = op.test.shape[0] // (1 if op.kron_outputs else c)
        f0t = _checks.outputs(f0_test, "f0_test", n_test, c)
    r0 = f0 - y
    r0v = r0 if op.kron_outputs else r0.reshape(-1, 1)
    if _iterate_cheaper(op, t, continuous):
        res, dtest = _iterate(op, r0v, t, lr, want_test)
    else:
        phi, psi = _step_functions(t, lr, continuous)
        res, dtest = _Propagator(op, r0v)(phi, psi, want_test)
    train = y[None] + res.reshape(len(t), n, c)
    test = test_loss = None
    if want_test:
        test = f0t[None] - dtest.reshape(len(t), -1, c)
        if y_test is not None:
            test_loss = mse(test, _checks.outputs(y_test, "y_test", test.shape[1], c)[None])
    return Trajectory(t, train, mse(train, y[None]), test, test_loss, continuous, lr)
