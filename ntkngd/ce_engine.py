"""Finite-width training with a non-quadratic loss (default softmax cross-entropy), beside the
function-space predictions of `ntkngd.loss_dynamics`.

Every method's update comes from the one engine (`ntkngd.engine`, jitted; the dual systems take
the loss's output Hessian H, see `ntkngd.methods`). Linearized, the training outputs move by
-lr J d with (J d)[(n, c)] = sum_l (Q_l A_l)[n] . D_l[(n, c)] (`linearized_step`).

For K-FAC and unit-wise with these losses there is no function-space theory (docs/theory.md:
open). `ce_isotropy` measures how far their linearized step is from the block-pattern form
alpha H^+ r, modulo per-sample shifts in null(H) (P: projector onto range(H)):
    alpha_fit = <P J d, x> / <x, x>,  deviation(alpha) = ||P J d - alpha x|| / ||alpha x||,
x = H^+ r. `train_ce` logs both per step; its predictions for K-FAC / unit-wise are the exact
NGD dynamics at lr * alpha (the derived `reference_alpha`) on the training set only.

Learning rate (lr=None): NGD-type methods lr = lr_fraction / alpha (default 0.5), alpha the derived
constant of `reference_alpha` (alpha_fit at initialization for a layer method without one; lr =
1 / alpha would be the
full function-space Newton step; cross-entropy has no minimiser at finite logits, and half of it
keeps the linearization accurate). GD: lr = N / lambda_max(Theta).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import jax.numpy as jnp
import numpy as np

from . import _checks, empirical
from ._checks import TheoryConditionWarning
from .cross_entropy import loss_predict
from .engine import MethodLike, _finite_or_diverged, ngd_direction, train_step
from .kernels import Kernels, analytic_kernels
from .loss_dynamics import loss_operator
from .losses import Loss, accuracy_or_nan, get_loss, softmax_cross_entropy
from .methods import get_method, patterns, unitwise
from .network import Network
from .train_log import CETrainLog, TrainLog

__all__ = ["ce_direction", "ce_signals", "linearized_step", "method_step", "ce_isotropy",
           "reference_alpha", "hessian_rank", "input_rank",
           "train_ce", "CETrainLog"]


def ce_signals(method: MethodLike, K: Kernels, damping: float, f: Any, y: Any,
               loss: Union[str, Loss] = softmax_cross_entropy) -> list:
    """Per-layer signals A_l (N, M_l) of `method` for the loss at outputs f (N, C), so that
    d[W_l; b_l] = Ht_l^T A_l. K: finite-width kernels at the same params."""
    empirical.require_features(K, "a cross-entropy parameter-space update")
    m, L = get_method(method), get_loss(loss)
    return m.signals(K, damping, jnp.asarray(f), jnp.asarray(y, jnp.asarray(f).dtype), L)


def linearized_step(K: Kernels, signals: list) -> np.ndarray:
    """J d (N, C) for the update d[W_l; b_l] = Ht_l^T A_l: sum_l (Q_l A_l)[n] . D_l[(n, c)]."""
    n, c = K.n_train, K.out_dim
    out = np.zeros((n, c))
    for q, a, d in zip(K.fwd_train, signals, K.backprops_train):
        qa = np.asarray(q, np.float64) @ np.asarray(a, np.float64)
        out += np.einsum("nm,ncm->nc", qa, np.asarray(d, np.float64).reshape(n, c, -1))
    return out


def method_step(method: MethodLike, K: Kernels, damping: float, f: Any, y: Any,
                loss: Union[str, Loss] = softmax_cross_entropy) -> np.ndarray:
    """The linearized step J d (N, C) of `method`'s direction at outputs f (finite-width K):
    from its signals, or from its per-layer updates (Method.update: diagonal, ekfac, shampoo)."""
    m, L = get_method(method), get_loss(loss)
    if m.update is None:
        return linearized_step(K, ce_signals(m, K, damping, f, y, L))
    from .methods import _layers
    f = jnp.asarray(f)
    dws = m.update(K, damping, f, jnp.asarray(y, f.dtype), L)
    return np.asarray(sum(_layers.jd(h, d, dw) for (h, d), dw in zip(_layers.layers(K), dws)),
                      np.float64)


def ce_isotropy(step: Any, f: Any, y: Any, alpha: Optional[float] = None,
                loss: Union[str, Loss] = softmax_cross_entropy) -> dict:
    """How far a linearized step J d (N, C) is from alpha H^+ r (the block-pattern form), modulo
    per-sample shifts in null(H): {"alpha_fit", "deviation" (at alpha_fit), "deviation_ref" (at
    `alpha`, NaN if None)}; see the module docstring."""
    L = get_loss(loss)
    f = jnp.asarray(f, jnp.float64)
    x = np.asarray(L.pinv_residual(f, jnp.asarray(y, f.dtype)), np.float64)
    uc = np.asarray(L.basis(f.shape[-1]), float)
    proj = uc @ uc.T
    s = np.asarray(step, np.float64) @ proj
    xx = float(np.sum(x * x))
    a_fit = float(np.sum(s * x) / xx)

    def dev(a):
        return float(np.linalg.norm(s - a * x) / (abs(a) * np.sqrt(xx)))
    return {"alpha_fit": a_fit, "deviation": dev(a_fit),
            "deviation_ref": float("nan") if alpha is None else dev(alpha)}


def hessian_rank(loss: Union[str, Loss], c: int) -> int:
    """Rank of the loss's per-sample output Hessian: C for MSE, C - 1 for the softmax (H 1 = 0),
    1 for the sigmoid binary cross-entropy (from basis(C): an orthonormal basis of range(H))."""
    L = get_loss(loss)
    return c if L.identity_hessian else int(np.asarray(L.basis(c)).shape[1])


def input_rank(x: Any) -> int:
    """Numerical rank of the (N, d) inputs: singular values above max(N, d) eps s_max."""
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    return int(np.sum(s > s[0] * max(np.shape(x)) * np.finfo(np.float64).eps))


def reference_alpha(method: MethodLike, net: Network, n_train: int, x: Any = None,
                    loss: Union[str, Loss] = softmax_cross_entropy) -> Optional[float]:
    """alpha of the block-pattern form alpha H^+ r (docs/theory.md, cross-entropy constants):
    1^T S^+ 1 for patterns; K-FAC r + N (L - 2) + 1 with r the rank of the inputs x (N when x is
    None; the first layer's factor projects on the r-dimensional row space, each hidden layer's
    on all N samples, the output layer adds 1); unit-wise gamma sum_l M_l / k + 1 with k the
    rank of the per-sample loss Hessian (C - 1 for the softmax: every hidden unit adds one
    direction shared by the k output directions). GD and other layer methods None."""
    m = get_method(method)
    if m.kind == "pattern":
        S = m.pattern(net.depth).matrix
        return patterns.alpha(S) if patterns.ones_in_range(S) else None
    if m.name == "kfac":
        r = n_train if x is None else min(n_train, input_rank(x))
        return float(r + n_train * (net.depth - 2) + 1)
    if m.name == "unit_wise":
        return float(net.gamma * sum(net.widths) / hessian_rank(loss, net.out_dim) + 1.0)
    return None


def ce_direction(method: MethodLike, net: Network, params: Any, x: Any, y: Any,
                 damping: Optional[float] = None,
                 loss: Union[str, Loss] = softmax_cross_entropy) -> list:
    """`ngd_direction` with the softmax cross-entropy loss (one-hot y, C >= 2): kept for v0.1."""
    L = get_loss(loss)
    L.check_outputs(net.out_dim)
    return ngd_direction(method, net, params, x, y, damping, L)


def _prediction(op, f0, y, f0t, yt, lr, steps, with_test=True):
    traj = loss_predict(op, f0, y, f0t if with_test else None,
                        y_test=yt if with_test else None, lr=lr, steps=steps)
    nan = np.full(steps + 1, np.nan)
    te_l = traj.test_loss if traj.test_loss is not None else nan
    te_a = traj.test_accuracy if traj.test_accuracy is not None else nan
    return traj.train_loss, te_l, traj.train_accuracy, te_a


def _step_kernels(net, dense, x):
    """Finite-width kernels and outputs at the dense parameters (one jitted feature pass)."""
    f, hts, ds = empirical.features(net, dense, x)
    from .engine import _kernels
    return _kernels(net, x, f, hts, ds), f


def default_lr(m, K0, n: int, alpha: Optional[float], lr_fraction: float) -> float:
    """The step size when none is given: GD n / lambda_max(Theta) (empirical NTK K0, n points),
    every other method lr_fraction / alpha (ValueError when there is no positive alpha)."""
    if m.kind == "gd":
        return n / float(np.linalg.eigvalsh(np.asarray(K0.ntk_train, np.float64))[-1])
    if alpha is None or not alpha > 0:
        raise ValueError(f"no alpha for {m.name}: pass lr explicitly")
    return lr_fraction / alpha


def train_ce(method: MethodLike, net: Network, params: Any, data: tuple, steps: int = 5,
             lr: Optional[float] = None, damping: Optional[float] = None, *,
             lr_fraction: float = 0.5, analytic: Optional[Kernels] = None,
             loss: Union[str, Loss] = softmax_cross_entropy) -> TrainLog:
    """T steps of `method` with a non-quadratic loss (default softmax cross-entropy) on a finite
    network, logged beside the function-space predictions (module docstring).

    data = (x_train, y_train, x_test, y_test) with targets valid for the loss (one-hot for the
    softmax). lr=None: lr_fraction / alpha (NGD-type, `reference_alpha`), GD
    N / lambda_max(Theta). damping: None for the method's default. analytic: precomputed
    `analytic_kernels(net, x_train, x_test)` to reuse across methods. Validated once; the steps
    run jitted (`engine.train_step`). A step that makes the outputs non-finite raises
    FloatingPointError naming the step (divergence), not the parameters.
    """
    L = get_loss(loss)
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)")
    steps = _checks.positive_int(steps, "steps")
    m = get_method(method)
    L.check_outputs(net.out_dim)
    xtr = _checks.inputs(data[0], "x_train")
    dense = empirical.dense_params(net, params, xtr.shape[1])
    ytr = L.validate(data[1], "y_train", xtr.shape[0], net.out_dim)
    xte = _checks.inputs(data[2], "x_test", dim=xtr.shape[1])
    yte = L.validate(data[3], "y_test", xte.shape[0], net.out_dim)
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    if damping is not None:
        damping = _checks.non_negative(damping, "damping")
    lr_fraction = _checks.positive(lr_fraction, "lr_fraction")
    n = xtr.shape[0]
    dtype = empirical.param_dtype(dense)
    xj, yj, xtj = (jnp.asarray(a, dtype) for a in (xtr, ytr, xte))
    K0 = empirical.empirical_kernels(net, params, xtr, xte)
    rho = float(m.resolve_damping(K0, damping))
    f0 = np.asarray(empirical._forward(net, dense, xj), np.float64)
    f0t = np.asarray(empirical._forward(net, dense, xtj), np.float64)
    alpha = reference_alpha(m, net, n, xtr, L)
    notes, fits, devs, devrefs = [], [], [], []

    def measure(K, f):
        iso = ce_isotropy(method_step(m, K, rho, f, ytr, L), f, ytr, alpha, L)
        fits.append(iso["alpha_fit"])
        devs.append(iso["deviation"])
        devrefs.append(iso["deviation_ref"])

    measure(K0, f0)
    approx = m.kind == "layer"
    pred_alpha = fits[0] if alpha is None else alpha
    if lr is None:
        lr = default_lr(m, K0, n, pred_alpha, lr_fraction)
    Ka = analytic if analytic is not None else analytic_kernels(net, xtr, xte)
    exact = get_method("exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryConditionWarning)
        if approx:
            op_emp, op_inf, lr_pred = loss_operator(exact, K0, 0.0, L), \
                loss_operator(exact, Ka, 0.0, L), lr * pred_alpha
            notes.append(f"{m.name} with the {L.name} loss has no function-space theory (open): "
                         f"predictions are exact NGD at lr * alpha = {lr_pred:.4g} (alpha "
                         f"{'derived' if alpha is not None else 'fitted at t = 0'}), "
                         "training set only")
        else:
            op_emp, op_inf, lr_pred = loss_operator(m, K0, rho, L), loss_operator(m, Ka, rho, L), lr
            notes += list(op_emp.notes)
    pe = _prediction(op_emp, f0, ytr, f0t, yte, lr_pred, steps, with_test=not approx)
    pi = _prediction(op_inf, f0, ytr, f0t, yte, lr_pred, steps, with_test=not approx)
    logs = {k: [] for k in ("tr", "te", "atr", "ate")}
    lr_j = jnp.asarray(lr, dtype)
    f, ft = f0, f0t
    for t in range(steps + 1):
        if t > 0:
            dense = train_step(m, net, L, rho, dense, xj, yj, lr_j)
            f = np.asarray(empirical._forward(net, dense, xj), np.float64)
            ft = np.asarray(empirical._forward(net, dense, xtj), np.float64)
            _finite_or_diverged((f, ft), t, lr, m.name)
        for k, v in (("tr", L.value(f, ytr)), ("te", L.value(ft, yte)),
                     ("atr", accuracy_or_nan(L, f, ytr)), ("ate", accuracy_or_nan(L, ft, yte))):
            logs[k].append(float(v))
        if 0 < t < steps:
            measure(_step_kernels(net, dense, xj)[0], f)
    arr = np.asarray
    (pe_tr, pe_te, pe_atr, pe_ate), (pi_tr, pi_te, pi_atr, pi_ate) = map(arr, pe), map(arr, pi)
    return TrainLog(m.name, float(lr), float(rho), alpha, np.arange(steps + 1),
                    arr(logs["tr"]), arr(logs["te"]), arr(logs["atr"]), arr(logs["ate"]),
                    pe_tr, pe_te, pi_tr, pi_te, pred_alpha=pred_alpha,
                    pred_emp_train_acc=pe_atr, pred_emp_test_acc=pe_ate,
                    pred_inf_train_acc=pi_atr, pred_inf_test_acc=pi_ate, alpha_fit=arr(fits),
                    deviation=arr(devs), deviation_ref=arr(devrefs), notes=tuple(notes))
