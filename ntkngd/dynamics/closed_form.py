"""Closed forms of the linear flow (MSE, constant G and G'), for `ntkngd.predict`.

Discrete steps:  g_t = (I - lr G)^t g_0,  f'_t = f'_0 - G' [(I - (I - lr G)^t) G^{-1}] g_0;
continuous time: g(tau) = exp(-lr G tau) g_0, f'(tau) = f'_0 - G' [(I - exp(-lr G tau)) G^{-1}]
g_0 (both defined for singular G). tau -> infinity (`fixed_point`): g_inf = (I - G G^D) g_0,
f'_inf = f'_0 - G' G^D g_0, G^D the inverse of G on its retained modes (`Operator.schur`), zero on
its numerical null space (symmetric G: G^+, the minimum-norm solution).

Isotropic G is a scalar, diagonal G sample by sample; otherwise short discrete horizons
(t_max <= m) iterate products with G (O(t_max m^2)), and continuous time or longer horizons
decompose G once (eigh, or eig when not symmetric), then O(m^2) per time point.
"""
from __future__ import annotations

import numpy as np

from .linear import Operator

# Relative deviation ||G - alpha I|| / ||alpha I|| below which G is treated as exactly alpha I.
ISOTROPIC_TOL = 1e-12
_EIG_COND_MAX = 1e10


class Propagator:
    """Evaluates phi(G) r and G' psi(G) r for the step/flow functions phi, psi."""

    def __init__(self, op: Operator, r0: np.ndarray):
        self.g, self.test, self.r0 = op.train, op.test, r0
        self.alpha = self.diag = None
        self.dense = False
        if op.deviation <= ISOTROPIC_TOL:
            self.alpha = op.alpha
            self.test_r0 = None if op.test is None else op.test @ r0
            return
        if op.is_diagonal:   # eigenpairs (G_ii, e_i): every sample evolves on its own
            self.diag = np.diagonal(op.train).copy()
            return
        lam, vecs = op.eig
        self.dense = not op.is_symmetric and bool(np.linalg.cond(vecs) > _EIG_COND_MAX)
        if self.dense:   # defective (ill-conditioned eigenvectors): evaluate matrix functions
            return
        inv = vecs.T if op.is_symmetric else np.linalg.inv(vecs)
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
        if self.dense:
            return self._dense(phi, psi, want_test)
        p, q = phi(self.lam), psi(self.lam)               # (T, m)
        if not np.iscomplexobj(self.vecs):
            p, q = p.real, q.real
        train = _apply(self.vecs, p[:, :, None] * self.coef[None])
        test = _apply(self.test_vecs, q[:, :, None] * self.coef[None]) if want_test else None
        return _real(train), _real(test)

    def _dense(self, phi, psi, want_test):
        from scipy.linalg import funm
        trains, tests = [], []
        for k in range(phi(np.zeros(1)).shape[0]):
            trains.append(funm(self.g, lambda z: phi(z)[k]) @ self.r0)
            if want_test:
                tests.append(self.test @ (funm(self.g, lambda z: psi(z)[k]) @ self.r0))
        return _real(np.stack(trains)), _real(np.stack(tests)) if want_test else None


def iterate(op: Operator, r0: np.ndarray, t: np.ndarray, lr: float, want_test: bool):
    """The discrete map by iteration, r_{s+1} = r_s - lr G r_s for s < t_max, and the test change
    lr G' sum_{s<t} r_s for every t with one product with G' (a `FactoredMatrix` is not formed)."""
    steps = t.astype(int)
    rs = [r0]
    for _ in range(int(steps.max())):
        rs.append(rs[-1] - lr * (op.train @ rs[-1]))
    r = np.stack(rs)                                          # (t_max + 1, m, k)
    train = r[steps]
    if not want_test:
        return train, None
    partial = np.concatenate([np.zeros_like(r[:1]), np.cumsum(r[:-1], axis=0)])[steps]
    return train, lr * _apply(op.test, partial)


def iterate_cheaper(op: Operator, t: np.ndarray, continuous: bool) -> bool:
    """Discrete steps, non-isotropic non-diagonal G with no decomposition cached, t_max <= m."""
    return (not continuous and op.deviation > ISOTROPIC_TOL and not op.is_diagonal
            and "eig" not in op.__dict__ and t.size > 0 and t.max() <= op.size)


def _apply(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a @ x[t] for every t as one matrix product (x: (T, m, C) -> (T, m', C))."""
    t, m, c = x.shape
    out = a @ np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(m, t * c)
    return out.reshape(-1, t, c).transpose(1, 0, 2)


def _real(a):
    return a.real if np.iscomplexobj(a) else a


def step_functions(t: np.ndarray, lr: float, continuous: bool):
    """phi(lam) (T, m): residual factor; psi(lam): accumulated test factor (sum of lr phi)."""
    tt = t[:, None]

    def phi(lam):
        x = lr * np.asarray(lam)[None, :]
        return np.exp(-x * tt) if continuous else np.power(1 - x + 0j, tt)

    def psi(lam):
        lam = np.asarray(lam)[None, :]
        x = lr * lam
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


def fixed_point(op: Operator, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g_inf, G' G^D g) for the residual g (m, k) as tau -> infinity, from the ordered real Schur
    form G = Q [[T11, T12], [0, T22]] Q^T (`Operator.schur`: well conditioned for non-normal G)
    and T11 Y - Y T22 = -T12: G^D = Q [[T11^-1, -T11^-1 Y], [0, 0]] Q^T, I - G G^D =
    Q [[0, Y], [0, I]] Q^T. A ValueError unless `op.slowest_rate` > 0 (else no limit)."""
    from scipy.linalg import solve_sylvester
    if not op.slowest_rate > 0:
        raise ValueError(f"operator {op.name!r} has no t -> infinity limit: G has an eigenvalue "
                         f"with real part {op.slowest_rate:.3g} x its largest modulus (a growing "
                         "or oscillating mode)")
    t, q, k, _ = op.schur
    t11, t12, t22 = t[:k, :k], t[:k, k:], t[k:, k:]
    g = np.asarray(g, float)
    u1, u2 = q[:, :k].T @ g, q[:, k:].T @ g
    y12 = solve_sylvester(t11, -t22, -t12) if k < len(t) else np.zeros((k, 0))
    v1 = np.linalg.solve(t11, u1 - y12 @ u2)
    res = q[:, :k] @ (y12 @ u2) + q[:, k:] @ u2
    dtest = None if op.test is None else (np.asarray(op.test, float) @ q[:, :k]) @ v1
    return res, dtest
