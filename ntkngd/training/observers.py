"""What `ntkngd.train` measures beside the steps: per-step isotropy of the linearized step, the
theory's reference alpha, accuracies, and the function-space predictions of the empirical and the
infinite-width operators.

Isotropy of a step without a fixed operator: how far the linearized output change J d is from
the block-pattern form alpha H^+ r, modulo null(H) (P: projector onto range(H), x = H^+ r):
    alpha_fit = <P J d, x> / <x, x>,   deviation(alpha) = ||P J d - alpha x|| / ||alpha x||.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import jax.numpy as jnp
import numpy as np

from ..dynamics.trajectory import trajectory
from ..networks.kernels import Kernels
from ..losses import Loss, accuracy_or_nan, class_encoding, coded_accuracy, get_loss
from ..methods import get_method, patterns


def isotropy_fit(step: Any, f: Any, y: Any, alpha: Optional[float] = None,
                 loss: Union[str, Loss] = "softmax_cross_entropy") -> dict:
    """How far a linearized step J d (N, C) is from alpha H^+ r, modulo per-sample shifts in
    null(H): {"alpha_fit", "deviation" (at alpha_fit), "deviation_ref" (at `alpha`, NaN if
    None)}; see the module docstring."""
    L = get_loss(loss)
    f = jnp.asarray(f, jnp.float64)
    x = np.asarray(L.pinv_residual(f, jnp.asarray(y, f.dtype)), np.float64)
    uc = np.asarray(L.basis(f.shape[-1]), float)
    s = np.asarray(step, np.float64) @ (uc @ uc.T)
    xx = float(np.sum(x * x))
    a_fit = float(np.sum(s * x) / xx)

    def dev(a):
        return float(np.linalg.norm(s - a * x) / (abs(a) * np.sqrt(xx)))
    return {"alpha_fit": a_fit, "deviation": dev(a_fit),
            "deviation_ref": float("nan") if alpha is None else dev(alpha)}


def method_step(method, K: Kernels, damping: float, f: Any, y: Any,
                loss: Union[str, Loss] = "softmax_cross_entropy") -> np.ndarray:
    """The linearized step J d (N, C) of `method`'s direction at outputs f from finite-width
    kernels K: sum_l J_l d[W_l; b_l] of its per-layer directions (`Method.directions`)."""
    from ..methods import _layers
    from ..networks.kernels import require_features
    m, L = get_method(method), get_loss(loss)
    require_features(K, "the linearized step of a parameter-space update")
    f = jnp.asarray(f)
    dws = m.directions(K, damping, f, jnp.asarray(y, f.dtype), L)
    return np.asarray(sum(_layers.jd(h, d, dw) for (h, d), dw in zip(_layers.layers(K), dws)),
                      np.float64)


def hessian_rank(loss: Union[str, Loss], c: int) -> int:
    """Rank of the loss's per-sample output Hessian: C for MSE, C - 1 for the softmax (H 1 = 0),
    1 for the sigmoid binary cross-entropy (from basis(C): an orthonormal basis of range(H))."""
    L = get_loss(loss)
    return c if L.identity_hessian else int(np.asarray(L.basis(c)).shape[1])


def input_rank(x: Any) -> int:
    """Numerical rank of the (N, ...) inputs: singular values above max(N, d) eps s_max."""
    x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    s = np.linalg.svd(x, compute_uv=False)
    return int(np.sum(s > s[0] * max(x.shape) * np.finfo(np.float64).eps))


def reference_alpha(method, net, n_train: int, x: Any = None,
                    loss: Union[str, Loss] = "softmax_cross_entropy") -> Optional[float]:
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
    if m.name == "unit_wise" and net.gamma is not None:
        return float(net.gamma * sum(net.widths) / hessian_rank(loss, net.out_dim) + 1.0)
    return None


def default_lr(m, K0: Kernels, n: int, alpha: Optional[float], lr_fraction: float) -> float:
    """The step size when none is given and there is no constant operator: GD n / lambda_max(Theta)
    (empirical NTK K0, n points), every other method lr_fraction / alpha (ValueError when there
    is no positive alpha)."""
    if m.kind == "gd":
        return n / float(np.linalg.eigvalsh(np.asarray(K0.ntk_train, np.float64))[-1])
    if alpha is None or not alpha > 0:
        raise ValueError(f"no alpha for {m.name}: pass lr explicitly")
    return lr_fraction / alpha


def accuracy(f: np.ndarray, y: np.ndarray, encoding: Optional[tuple] = None) -> float:
    """Fraction of points classified as their targets code them (`losses.class_encoding`: 0/1 ->
    f > 0.5, +-1 / +-0.5 -> sign, one-hot -> argmax; read from y unless `encoding` is given);
    ValueError for targets that code no classes."""
    return float(coded_accuracy(f, y, class_encoding(y) if encoding is None else encoding))


def accuracy_fn(L: Loss, y_train: np.ndarray, y_test: np.ndarray):
    """accuracy(f, y) as the log records it: MSE with the class coding of the train and test
    targets together (NaN for regression targets); other losses the loss's own."""
    if not L.identity_hessian:
        return lambda f, y: float(accuracy_or_nan(L, f, y))
    try:
        enc = class_encoding(y_train, y_test)
    except ValueError:
        return lambda f, y: float("nan")
    return lambda f, y: accuracy(f, y, enc)


def predictions(op, f0, y, f0t, yt, lr: float, steps: int) -> tuple:
    """(train loss, test loss, train accuracy, test accuracy) per step 0..steps of `predict`
    with `op` (None: no such prediction) from the network's own outputs and the targets, both
    (N, C) and checked by the caller; NaN where missing (no operator, or no test side: f0t None
    or op.test None)."""
    nan = np.full(steps + 1, np.nan)
    if op is None:
        return nan, nan, nan, nan
    with_test = f0t is not None and op.test is not None
    traj = trajectory(op, f0, y, f0t if with_test else None, yt if with_test else None,
                      np.arange(steps + 1, dtype=np.float64), lr)
    return (traj.train_loss, nan if traj.test_loss is None else traj.test_loss,
            traj.train_accuracy, nan if traj.test_accuracy is None else traj.test_accuracy)
