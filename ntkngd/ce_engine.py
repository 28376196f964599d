"""Finite-width training with the cross-entropy loss, beside the function-space CE predictions.

Conventions (THEORY.md, "Cross-entropy"; ntkngd.cross_entropy): C >= 2 outputs, one-hot targets,
Loss = (1/N) sum_n -sum_c y_nc log softmax(f_n)_c, residual r = p - y (N times the loss gradient in
f), Fisher F = J^T Hs J / N with Hs = blockdiag_n(diag(p_n) - p_n p_n^T), gradient J^T r / N.
Parameters as in ntkngd.empirical: per layer the augmented weight [W_l; b_l], layer inputs Ht_l
(N, M_{l-1}[+1]), backprops D_l (N C, M_l), forward Gram Q_l = Ht_l Ht_l^T. Every update is
params - lr * d with d[W_l; b_l] = Ht_l^T A_l (`empirical.contract`) for per-sample signals A_l
(N, M_l); linearized, the training outputs move by -lr J d with
    (J d)[(n, c)] = sum_l sum_m (Q_l A_l)[n, m] D_l[(n, c), m]          (`linearized_step`).

Methods and their signals:
  gd:        v_l = r / N for every layer (A_l = dual_signals).
  patterns (exact, block_diagonal, block_tridiagonal, ntkngd.block_pattern(S)): push-through,
             Delta theta_l = -lr J_l^T v_l with
                 [(S (x) I) blockdiag(Hs Theta_l) + N rho I] v = 1 (x) r        (rho > 0),
             an (L N C) system from the empirical per-layer blocks (exact NGD: (Hs Theta + N rho) v
             = r, one block). rho = 0 is the exact pseudo-inverse limit, derived, not approximated:
             the parameter-space minimum-norm solution (`cross_entropy.min_norm_duals`)
                 v_l = U v'_l,  v' = MSE pattern duals of U^T Theta_l U for U^T Hs^+ r,
             U = I_N (x) U_C the basis of the logit directions orthogonal to 1 (Hs is singular
             along 1 of every sample, so the damped system is ill-posed without this). Then
             J d = alpha Hs^+ r + (per-sample multiples of 1) exactly at any width, i.e. the
             linearized training step is the infinite-width one (shifts leave softmax unchanged).
             Default damping is 0 (this limit); damping > 0 solves the damped system as written.
  kfac:      F_l ~ A_{l-1} (x) B_l, A = Ht^T Ht / N, B = sum_n D_n^T Hs_n D_n / N (the backward
             factor with the softmax Hessian inside), factored damping lam = sqrt(rho):
             d_l = (A + lam)^{-1} grad_l (B + lam)^{-1}. With Dh = Hs^{1/2} D, z = Hs^{1/2} Hs^+ r
             (so that grad_l = Ht^T Pz Dh / N, Pz[n, (n, c)] = z_nc) push-through gives
                 A_l = N (Q_l + N lam)^+ Pz (Dh Dh^T + N lam)^+ Hs^{1/2} D_l,
             pseudo-inverses when lam = 0 (everything in N C-sized Grams; no M x M inverse).
  unit_wise: one block per unit i of layer l (column i of [W_l; b_l]): F_li = J_li^T Hs J_li / N.
             With d_ni = D_l[(n, :), i] (C-vector), h_ni = d_ni^T Hs_n d_ni, a_ni = d_ni . r_n,
             push-through and Woodbury give the N x N solve per unit
                 (N rho I + diag(h_i) Q_l) A_l[:, i] = a_i.
             Needs rho > 0 (default `unitwise.default_damping`, as for MSE).

For K-FAC and unit-wise with cross-entropy there is no theory (THEORY.md: open). `ce_isotropy`
measures how far their linearized step is from the block-pattern form alpha Hs^+ r, modulo
per-sample logit shifts (J d projected onto the complement of 1 per sample):
    alpha_fit = <P J d, x> / <x, x>,  deviation(alpha) = ||P J d - alpha x|| / ||alpha x||,
x = Hs^+ r. `train_ce` logs both per step; its predictions for K-FAC / unit-wise are the exact
NGD flow at lr * alpha_fit (alpha_fit measured at initialization) on the training set only.

Learning rate (train_ce lr=None): NGD-type methods lr = lr_fraction / alpha (default 0.5), with
alpha = 1^T S^+ 1 for patterns and alpha_fit at initialization for K-FAC / unit-wise. lr = 1 / alpha
would be the full function-space Newton step (the Hessian of the loss in f is Hs / N): there is no
one-step convergence for CE (the loss has no minimiser at finite logits); half of it keeps the
logits' change per step (~ C/2 at uniform p) moderate, so the linearization stays accurate. GD:
lr = N / lambda_max(Theta) (the MSE-stable rate; the CE curvature is at most 1/2 of it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from . import _checks, empirical, linalg
from ._checks import TheoryConditionWarning
from .cross_entropy import (accuracy, ce_min_norm_operator, ce_operator,
                            ce_predict, check_one_hot, complement_basis, cross_entropy,
                            min_norm_duals)
from .engine import apply_update
from .kernels import Kernels, analytic_kernels
from .methods import BlockPattern, canonical, patterns, unitwise
from .network import Network

Method = Union[str, BlockPattern]

__all__ = ["ce_direction", "ce_signals", "ce_duals", "linearized_step", "ce_isotropy",
           "reference_alpha", "train_ce", "CETrainLog"]

_CHUNK_BYTES = 64 * 2 ** 20


def _key(method: Method) -> Method:
    return method if isinstance(method, BlockPattern) else canonical(method)


def _pattern(key: Method, depth: int) -> Optional[np.ndarray]:
    if isinstance(key, BlockPattern):
        if key.depth != depth:
            raise ValueError(f"block pattern is {key.depth} x {key.depth} but the network has "
                             f"{depth} layers")
        return key.matrix
    maker = {"exact": patterns.full, "block_diagonal": patterns.diagonal,
             "block_tridiagonal": patterns.tridiagonal}.get(key)
    return None if maker is None else maker(depth).matrix


def _probs(f: np.ndarray, y: np.ndarray):
    """(p, r = p - y, x = Hs^+ r) in float64 numpy; x = q - mean(q), q = r' / p with
    1/p = exp(-log_softmax(f)) (the closed form of cross_entropy.softmax_hessian_pinv)."""
    f = np.asarray(f, np.float64)
    logp = f - f.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    p = np.exp(logp)
    r = p - y
    q = (r - r.mean(-1, keepdims=True)) * np.exp(-logp)
    return p, r, q - q.mean(-1, keepdims=True)


def _hs_mul(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Hs(p) @ a for a (N C, k) sample-major."""
    n, c = p.shape
    a3 = a.reshape(n, c, -1)
    pa = np.einsum("nc,nck->nk", p, a3)
    return (p[:, :, None] * (a3 - pa[:, None, :])).reshape(n * c, -1)


def _hs_sqrt(p: np.ndarray) -> np.ndarray:
    """Per-sample Hs_n^{1/2} (N, C, C), via the complement basis (Hs_n = U_C Ht_n U_C^T)."""
    c = p.shape[1]
    uc = complement_basis(c)
    hs = np.einsum("nc,cd->ncd", p, np.eye(c)) - p[:, :, None] * p[:, None, :]
    ht = np.einsum("ci,ncd,dj->nij", uc, hs, uc)
    w, v = np.linalg.eigh(ht)
    root = np.einsum("nij,nj,nkj->nik", v, np.sqrt(np.clip(w, 0, None)), v)
    return np.einsum("ci,nij,dj->ncd", uc, root, uc)


def _blockdiag_mul(mats: np.ndarray, a: np.ndarray) -> np.ndarray:
    """blockdiag_n(mats_n) @ a for per-sample (N, C, C) and a (N C, k)."""
    n, c, _ = mats.shape
    return np.einsum("ncd,ndk->nck", mats, a.reshape(n, c, -1)).reshape(n * c, -1)


# ----------------------------------------------------------------------------- dual vectors
@empirical.serial_blas()
def ce_duals(K: Kernels, S: np.ndarray, damping: float, f: Any, y: Any) -> tuple[np.ndarray, list]:
    """Per-layer dual vectors v (L, N C) of the cross-entropy pattern update at outputs f.

    damping > 0: [(S (x) I) blockdiag(Hs Theta_l) + N rho I] v = 1 (x) r (exact NGD, S = 1 1^T,
    as one block: (Hs Theta + N rho) v = r). damping = 0: the minimum-norm limit (module
    docstring). Delta theta_l = -lr J_l^T v_l."""
    S = np.asarray(S, float)
    n, c, L = K.n_train, K.out_dim, K.depth
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    p, r, x = _probs(f, y)
    blocks = np.asarray(K.blocks_train, np.float64)
    exact = S.shape[0] == 1 or bool(np.all(S == 1))
    if exact:
        blocks, S = blocks.sum(0)[None], np.ones((1, 1))
    notes: list = []
    if damping > 0:
        m, Lb = n * c, blocks.shape[0]
        hb = np.stack([_hs_mul(p, b) for b in blocks])
        big = np.zeros((Lb * m, Lb * m))
        for i in range(Lb):
            for j in range(Lb):
                if S[i, j]:
                    big[i * m:(i + 1) * m, j * m:(j + 1) * m] = hb[j]
        big += n * damping * np.eye(Lb * m)
        v = np.linalg.solve(big, np.tile(r.reshape(-1), Lb)).reshape(Lb, m)
    else:
        u = np.kron(np.eye(n), complement_basis(c))
        vp, notes = min_norm_duals(blocks, S, c, (u.T @ x.reshape(-1))[:, None])
        v = np.einsum("ai,li->la", u, vp[:, :, 0])
    if exact:
        v = np.repeat(v, L, 0)
    return v, notes


# ----------------------------------------------------------------------------- signals
@empirical.serial_blas()
def _kfac_signals(K: Kernels, damping: float, p, r, x) -> list:
    n, c = K.n_train, K.out_dim
    lam_shift = n * np.sqrt(damping)
    root = _hs_sqrt(p)                                            # (N, C, C)
    z = np.einsum("ncd,nd->nc", root, x)                           # Hs^{1/2} Hs^+ r = Hs^{+1/2} r
    out = []
    for l in range(K.depth):
        q_inv = linalg.ridge_inverse(np.asarray(K.fwd_train[l], np.float64), lam_shift)
        dd = np.asarray(K.bwd_train[l], np.float64)
        g = _blockdiag_mul(root, _blockdiag_mul(root, dd).T).T     # R DD^T R (symmetric)
        g_inv = linalg.ridge_inverse(g, lam_shift)
        w = _blockdiag_mul(root, g_inv).T                          # (G + N lam)^+ R  (R sym)
        zrow = np.einsum("nc,ncj->nj", z, w.reshape(n, c, -1))     # Pz W  (N, N C)
        d = np.asarray(K.backprops_train[l], np.float64)
        out.append(n * q_inv @ (zrow @ d))
    return out


@empirical.serial_blas()
def _unit_wise_signals(K: Kernels, damping: float, p, r) -> list:
    if not damping > 0:
        raise ValueError("unit-wise with cross-entropy needs damping > 0 (the per-unit blocks "
                         "Hs Theta_li have rank <= N of N C; pass damping=None for the default "
                         "unitwise.default_damping)")
    n, c = K.n_train, K.out_dim
    shift = n * damping
    out = []
    for l in range(K.depth):
        q = np.asarray(K.fwd_train[l], np.float64)
        d = np.asarray(K.backprops_train[l], np.float64).reshape(n, c, -1)
        pd = np.einsum("nc,nci->ni", p, d)
        h = np.einsum("nc,nci->ni", p, d * d) - pd ** 2             # d^T Hs d   (N, M)
        a = np.einsum("nc,nci->ni", r, d)                          # d . r      (N, M)
        sig = np.zeros_like(a)
        step = max(1, _CHUNK_BYTES // (8 * n * n))
        for s in range(0, a.shape[1], step):
            hi = h[:, s:s + step].T                                 # (k, N)
            mats = hi[:, :, None] * q[None] + shift * np.eye(n)[None]
            sig[:, s:s + step] = np.linalg.solve(mats, a[:, s:s + step].T[:, :, None])[..., 0].T
        out.append(sig)
    return out


def ce_signals(method: Method, K: Kernels, damping: float, f: Any, y: Any) -> list:
    """Per-layer signals A_l (N, M_l) of `method` for cross-entropy at outputs f (N, C), so that
    d[W_l; b_l] = Ht_l^T A_l (module docstring). K: finite-width kernels at the same params."""
    empirical.require_features(K, "a cross-entropy parameter-space update")
    key = _key(method)
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    if key == "gd":
        r = _probs(f, y)[1]
        return empirical.dual_signals(K.backprops_train, [r.reshape(-1) / K.n_train] * K.depth,
                                      K.out_dim)
    if key == "kfac":
        return _kfac_signals(K, damping, *_probs(f, y))
    if key == "unit_wise":
        p, r, _ = _probs(f, y)
        return _unit_wise_signals(K, damping, p, r)
    v, _ = ce_duals(K, _pattern(key, K.depth), damping, f, y)
    return empirical.dual_signals(K.backprops_train, list(v), K.out_dim)


def linearized_step(K: Kernels, signals: list) -> np.ndarray:
    """J d (N, C) for the update d[W_l; b_l] = Ht_l^T A_l: sum_l (Q_l A_l)[n] . D_l[(n, c)]."""
    n, c = K.n_train, K.out_dim
    out = np.zeros((n, c))
    for q, a, d in zip(K.fwd_train, signals, K.backprops_train):
        qa = np.asarray(q, np.float64) @ np.asarray(a, np.float64)
        out += np.einsum("nm,ncm->nc", qa, np.asarray(d, np.float64).reshape(n, c, -1))
    return out


def ce_isotropy(step: Any, f: Any, y: Any, alpha: Optional[float] = None) -> dict:
    """How far a linearized step J d (N, C) is from alpha Hs^+ r (the block-pattern form), modulo
    per-sample logit shifts: {"alpha_fit", "deviation" (at alpha_fit), "deviation_ref" (at
    `alpha`, NaN if None)}; see the module docstring."""
    step = np.asarray(step, np.float64)
    x = _probs(np.asarray(f, np.float64), np.asarray(y, np.float64))[2]
    s = step - step.mean(-1, keepdims=True)
    xx = float(np.sum(x * x))
    a_fit = float(np.sum(s * x) / xx)

    def dev(a):
        return float(np.linalg.norm(s - a * x) / (abs(a) * np.sqrt(xx)))
    return {"alpha_fit": a_fit, "deviation": dev(a_fit),
            "deviation_ref": float("nan") if alpha is None else dev(alpha)}


def reference_alpha(method: Method, net: Network, n_train: int) -> Optional[float]:
    """alpha of the block-pattern form: 1^T S^+ 1 for patterns; K-FAC the literal MSE constant
    N (L - 1) + 1; unit-wise the MSE count gamma sum M / C + 1 (neither is derived for CE); GD
    None."""
    key = _key(method)
    if key == "gd":
        return None
    if key == "kfac":
        return float(n_train * (net.depth - 1) + 1)
    if key == "unit_wise":
        return unitwise.predicted_alpha(net)
    S = _pattern(key, net.depth)
    return patterns.alpha(S) if patterns.ones_in_range(S) else None


def _default_damping(key: Method, K: Kernels, damping: Optional[float]) -> float:
    if damping is None:
        return unitwise.default_damping(K) if key == "unit_wise" else 0.0
    return _checks.non_negative(damping, "damping")


def _batch(net: Network, params: Any, x: Any, y: Any):
    x = _checks.inputs(x, "x_train")
    dense = empirical.dense_params(net, params, x.shape[1])
    y = check_one_hot(y, "y_train", x.shape[0], net.out_dim)
    return x, y, dense


def _direction(key, net, params, x, y, damping):
    x, y, dense = _batch(net, params, x, y)
    K, f = empirical.kernels_and_outputs(net, params, x)
    f = np.asarray(f, np.float64)
    rho = _default_damping(key, K, damping)
    sig = ce_signals(key, K, rho, f, y)
    d = empirical.split_update(net, dense, empirical.contract(K.layer_inputs_train, sig))
    return d, K, f, y, sig, rho


def ce_direction(method: Method, net: Network, params: Any, x: Any, y: Any,
                 damping: Optional[float] = 0.0) -> list:
    """Parameter-space direction d (pytree like params) of `method` for the cross-entropy loss on
    the batch (x, y one-hot (N, C), C = net.out_dim >= 2); one step is params - lr * d.

    method: gd, exact, block_diagonal, block_tridiagonal, kfac, unit_wise, or
    ntkngd.block_pattern(S). damping rho >= 0 (parameter-space Tikhonov, F + rho I; K-FAC factored
    sqrt(rho)); 0 for the patterns is the exact minimum-norm limit; None: 0, or
    unitwise.default_damping for unit_wise (which needs rho > 0)."""
    return _direction(_key(method), net, params, x, y, damping)[0]


# ----------------------------------------------------------------------------- training log
@dataclass(frozen=True)
class CETrainLog:
    """Per step t = 0..T: measured cross-entropy loss / accuracy of the finite network (train and
    test), and the discrete-map predictions (`ce_predict`, same lr) from the empirical kernels at
    initialization (`pred_emp_*`) and from the infinite-width analytic kernels with the network's
    own f_0 (`pred_inf_*`). Per step t = 0..T-1: alpha_fit and deviation of the linearized step
    from alpha Hs^+ r (`ce_isotropy`; deviation_ref at the reference alpha). For K-FAC /
    unit-wise the predictions are exact NGD at lr * pred_alpha (training set; test NaN)."""

    method: str
    lr: float
    damping: float
    alpha: Optional[float]
    pred_alpha: Optional[float]
    step: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    pred_emp_train_loss: np.ndarray
    pred_emp_test_loss: np.ndarray
    pred_emp_train_acc: np.ndarray
    pred_emp_test_acc: np.ndarray
    pred_inf_train_loss: np.ndarray
    pred_inf_test_loss: np.ndarray
    pred_inf_train_acc: np.ndarray
    pred_inf_test_acc: np.ndarray
    alpha_fit: np.ndarray
    deviation: np.ndarray
    deviation_ref: np.ndarray
    notes: tuple = field(default=())

    def rel_error(self, which: str = "emp") -> np.ndarray:
        """|measured - predicted| / predicted training loss per step."""
        pred = self.pred_emp_train_loss if which == "emp" else self.pred_inf_train_loss
        return np.abs(self.train_loss - pred) / np.abs(pred)

    def table(self) -> str:
        a = "none" if self.alpha is None else f"{self.alpha:.6g}"
        pa = "none" if self.pred_alpha is None else f"{self.pred_alpha:.6g}"
        head = (f"{self.method} (cross-entropy): lr {self.lr:.6g}, damping {self.damping:.3g}, "
                f"reference alpha {a}, prediction alpha {pa}\n"
                f"{'step':>4} {'train':>10} {'pred emp':>10} {'pred inf':>10} {'test':>10} "
                f"{'pred emp':>10} {'pred inf':>10} {'acc tr':>6} {'acc te':>6} "
                f"{'alpha_fit':>10} {'dev':>9} {'dev ref':>9}")
        rows = []
        T = len(self.step)
        for i in range(T):
            tail = (f" {self.alpha_fit[i]:10.4g} {self.deviation[i]:9.2e} "
                    f"{self.deviation_ref[i]:9.2e}") if i < T - 1 else ""
            rows.append(f"{int(self.step[i]):>4} {self.train_loss[i]:10.4e} "
                        f"{self.pred_emp_train_loss[i]:10.4e} {self.pred_inf_train_loss[i]:10.4e} "
                        f"{self.test_loss[i]:10.4e} {self.pred_emp_test_loss[i]:10.4e} "
                        f"{self.pred_inf_test_loss[i]:10.4e} {self.train_acc[i]:6.3f} "
                        f"{self.test_acc[i]:6.3f}" + tail)
        return "\n".join([head] + rows + [f"  note: {n}" for n in self.notes])


def _prediction(op, f0, y, f0t, yt, lr, steps, with_test=True):
    traj = ce_predict(op, None, f0, y, f0t if with_test else None,
                      y_test=yt if with_test else None, lr=lr, steps=steps)
    nan = np.full(steps + 1, np.nan)
    te_l = traj.test_loss if traj.test_loss is not None else nan
    te_a = traj.test_accuracy if traj.test_accuracy is not None else nan
    return traj.train_loss, te_l, traj.train_accuracy, te_a


def train_ce(method: Method, net: Network, params: Any, data: tuple, steps: int = 5,
             lr: Optional[float] = None, damping: Optional[float] = None, *,
             lr_fraction: float = 0.5, analytic: Optional[Kernels] = None) -> CETrainLog:
    """T steps of `method` with the cross-entropy loss on a finite network, logged beside the
    function-space predictions (module docstring).

    data = (x_train, y_train, x_test, y_test), one-hot targets with C = net.out_dim >= 2 classes.
    lr=None: lr_fraction / alpha (NGD-type; K-FAC / unit-wise: alpha_fit at init), GD
    N / lambda_max(Theta). damping: as in `ce_direction` (None: 0, unit-wise default).
    analytic: precomputed `analytic_kernels(net, x_train, x_test)` to reuse across methods.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    key = _key(method)
    xtr, ytr, _ = _batch(net, params, data[0], data[1])
    xte = _checks.inputs(data[2], "x_test", dim=xtr.shape[1])
    yte = check_one_hot(data[3], "y_test", xte.shape[0], net.out_dim)
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    lr_fraction = _checks.positive(lr_fraction, "lr_fraction")
    n = xtr.shape[0]
    K0 = empirical.empirical_kernels(net, params, xtr, xte)
    rho = _default_damping(key, K0, damping)
    f0 = np.asarray(empirical.outputs(net, params, xtr), np.float64)
    f0t = np.asarray(empirical.outputs(net, params, xte), np.float64)
    alpha = reference_alpha(key, net, n)
    notes = []
    fits, devs, devrefs = [], [], []

    def measure(K, f, sig):
        iso = ce_isotropy(linearized_step(K, sig), f, ytr, alpha)
        fits.append(iso["alpha_fit"])
        devs.append(iso["deviation"])
        devrefs.append(iso["deviation_ref"])

    sig0 = ce_signals(key, K0, rho, f0, ytr)
    measure(K0, f0, sig0)
    approx = key in ("kfac", "unit_wise")
    pred_alpha = fits[0] if approx else alpha
    if lr is None:
        if key == "gd":
            lr = n / float(np.linalg.eigvalsh(np.asarray(K0.ntk_train, np.float64))[-1])
        elif pred_alpha is None or not pred_alpha > 0:
            raise ValueError(f"no alpha for {key}: pass lr explicitly")
        else:
            lr = lr_fraction / pred_alpha
    Ka = analytic if analytic is not None else analytic_kernels(net, xtr, xte)
    if approx:
        op_emp, op_inf, lr_pred = ce_min_norm_operator("exact", K0), \
            ce_operator("exact", Ka, 0.0), lr * pred_alpha
        notes.append(f"{key} with cross-entropy has no function-space theory (open): predictions "
                     f"are exact NGD at lr * alpha_fit(t=0) = {lr_pred:.4g}, training set only")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryConditionWarning)
            op_emp = ce_min_norm_operator(key, K0) if rho == 0 else ce_operator(key, K0, rho)
            op_inf = ce_operator(key, Ka, rho)
        lr_pred = lr
        notes += list(op_emp.notes)
    pe = _prediction(op_emp, f0, ytr, f0t, yte, lr_pred, steps, with_test=not approx)
    pi = _prediction(op_inf, f0, ytr, f0t, yte, lr_pred, steps, with_test=not approx)
    logs = {k: [] for k in ("tr", "te", "atr", "ate")}
    p = params
    f, ft, K, sig = f0, f0t, K0, sig0
    for t in range(steps + 1):
        if t > 0:
            f = np.asarray(empirical.outputs(net, p, xtr), np.float64)
            ft = np.asarray(empirical.outputs(net, p, xte), np.float64)
        for k, v in (("tr", cross_entropy(f, ytr)), ("te", cross_entropy(ft, yte)),
                     ("atr", accuracy(f, ytr)), ("ate", accuracy(ft, yte))):
            logs[k].append(float(v))
        if t == steps:
            break
        if t > 0:
            K = empirical.empirical_kernels(net, p, xtr)
            sig = ce_signals(key, K, rho, f, ytr)
            measure(K, f, sig)
        dense = empirical.dense_params(net, p, xtr.shape[1])
        d = empirical.split_update(net, dense, empirical.contract(K.layer_inputs_train, sig))
        p = apply_update(p, d, lr)
    name = key.name if isinstance(key, BlockPattern) else key
    arr = np.asarray
    return CETrainLog(name, float(lr), float(rho), alpha, pred_alpha, np.arange(steps + 1),
                      arr(logs["tr"]), arr(logs["te"]), arr(logs["atr"]), arr(logs["ate"]),
                      *map(arr, pe), *map(arr, pi), arr(fits), arr(devs), arr(devrefs),
                      tuple(notes))
