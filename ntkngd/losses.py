"""Losses as small components: value, residual, per-sample output Hessian and its pseudo-inverse.

Convention (docs/theory.md): Loss = (1/N) sum_n l(f_n, y_n) over N points with C outputs each.
  residual  r_n = d l / d f_n                 (N times the gradient of Loss in f),
  hessian   H_n = d^2 l / d f_n^2  (C x C)     (the Fisher is F = J^T blockdiag(H_n) J / N),
  pinv      x_n = H_n^+ r_n, computed in closed form without cancellation,
  basis     U_C (C x k), an orthonormal basis of range(H_n) (the same for every sample).
Shipped: `mse` (H = I), `softmax_cross_entropy` (one-hot; H = diag(p) - p p^T),
`sigmoid_binary_cross_entropy` (C = 1, targets 0/1; H = p (1 - p)); `register_loss` adds one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks

__all__ = ["Loss", "mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy", "LOSSES",
           "get_loss", "register_loss", "complement_basis", "class_encoding", "coded_accuracy"]


@dataclass(frozen=True, eq=False)
class Loss:
    """One loss (module docstring): value(f, y), residual(f, y), hessian(f) (N, C, C),
    pinv_residual(f, y) = H^+ r (exact for every probability), basis(C) = U_C, pinv_apply(f, r) =
    H^+ r for any r in range(H) (targets not at hand), validate(y, name, n, c) -> float targets,
    accuracy(f, y); identity_hessian: H = I (MSE: linear dynamics, closed-form predictions).
    Functions act on (N, C) arrays (value and accuracy on the last two axes: a leading time axis
    is allowed). Hashable by identity: usable as a static jit argument."""

    name: str
    value: Callable
    residual: Callable
    hessian: Callable
    pinv_residual: Callable
    basis: Callable
    validate: Callable
    accuracy: Callable
    pinv_apply: Callable = None
    out_dims: tuple = (1, None)
    identity_hessian: bool = False

    def check_outputs(self, c: int) -> None:
        """A clear error when a network with c outputs cannot use this loss."""
        lo, hi = self.out_dims
        if c < lo or (hi is not None and c > hi):
            need = f"C >= {lo}" if hi is None else \
                f"C = {lo}" if lo == hi else f"{lo} <= C <= {hi}"
            raise ValueError(f"the {self.name} loss needs {need} outputs; the network has "
                             f"out_dim = {c}" + (" (C >= 2 classes for the softmax)"
                                                 if lo == 2 else ""))

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"


# ---------------------------------------------------------------------------- mean squared error
def _pair(f, y):
    """f as a JAX array; a ValueError unless y has f's last two axes (N, C) (a leading time axis
    on either broadcasts): otherwise f - y would broadcast (N, 1) against (N,) to (N, N)."""
    f = jnp.asarray(f)
    if f.ndim < 2 or np.ndim(y) < 2 or tuple(np.shape(y)[-2:]) != f.shape[-2:]:
        raise ValueError(f"outputs f and targets y must share their last two axes (points, "
                         f"outputs), got shapes {f.shape} and {np.shape(y)}")
    return f


def _mse_value(f, y):
    f = _pair(f, y)
    return 0.5 * jnp.sum((f - y) ** 2, axis=(-2, -1)) / f.shape[-2]


def _eye_hessian(f):
    n, c = f.shape
    return jnp.broadcast_to(jnp.eye(c, dtype=f.dtype), (n, c, c))


def class_encoding(*ys) -> tuple:
    """How regression targets code classes, read from the targets themselves (all arrays that
    share the coding, e.g. train and test): ("threshold", t) for one output with two values
    a < b (t = (a + b) / 2: 0/1 -> 0.5, +-1 and +-0.5 -> 0; a single value v stands for {0, 1}
    when v is 0 or 1, else for {-|v|, |v|}); ("argmax", None) for C > 1 outputs whose every
    row has a unique largest entry (one-hot, or +-a with one positive entry). Raises ValueError
    for anything else (accuracy is undefined for such targets)."""
    arrs = [np.asarray(y, np.float64) for y in ys]
    c = arrs[0].shape[-1] if arrs and arrs[0].ndim else 0
    if c == 0 or any(a.shape[-1:] != (c,) or not np.all(np.isfinite(a)) for a in arrs):
        raise ValueError(f"class_encoding needs finite targets that share their last axis "
                         f"(outputs), got shapes {[a.shape for a in arrs]}")
    if c == 1:
        vals = np.unique(np.concatenate([a.reshape(-1) for a in arrs]))
        if len(vals) == 2:
            return "threshold", float(vals.mean())
        if len(vals) == 1:
            v = float(vals[0])
            return "threshold", 0.5 if v in (0.0, 1.0) else 0.0
        raise ValueError(f"accuracy needs class-coded targets: one output with two values (0/1, "
                         f"+-1, +-0.5), got {len(vals)} distinct target values (regression "
                         "targets have no accuracy)")
    rows = np.concatenate([a.reshape(-1, c) for a in arrs])
    if not np.all((rows == rows.max(-1, keepdims=True)).sum(-1) == 1):
        raise ValueError(f"accuracy needs class-coded targets: with C = {c} outputs every row "
                         "must have one largest entry (one-hot, or +-a with one positive); "
                         "some rows tie")
    return "argmax", None


def coded_accuracy(f, y, encoding: tuple):
    """Fraction of points whose outputs f fall in the class of their targets y (last two axes;
    a leading time axis is allowed) under `class_encoding`'s encoding."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    kind, t = encoding
    if kind == "threshold":
        return np.mean((f[..., 0] > t) == (y[..., 0] > t), axis=-1)
    return np.mean(np.argmax(f, -1) == np.argmax(y, -1), axis=-1)


def accuracy_or_nan(loss, f, y) -> np.ndarray:
    """`loss.accuracy(f, y)`, or NaN (per leading index of f beyond its last two axes) where the
    targets code no classes (MSE on regression targets): how training logs record it."""
    try:
        return np.asarray(loss.accuracy(f, y), np.float64)
    except ValueError:
        return np.full(np.shape(f)[:-2], np.nan)


def _mse_accuracy(f, y):
    """Accuracy of MSE outputs f for class-coded targets y, the coding read from y
    (`class_encoding`: 0/1 -> f > 0.5, +-a -> sign, one-hot -> argmax; else ValueError)."""
    return coded_accuracy(f, y, class_encoding(y))


mse = Loss("mse", _mse_value, lambda f, y: f - y, _eye_hessian, lambda f, y: f - y,
           lambda c: np.eye(c), _checks.outputs, _mse_accuracy, lambda f, r: r,
           identity_hessian=True)


# ---------------------------------------------------------------------------- softmax cross-entropy
def complement_basis(c: int) -> np.ndarray:
    """Orthonormal basis U_C (C, C-1) of the complement of the all-ones vector (Helmert):
    U_C^T 1 = 0, U_C^T U_C = I, U_C U_C^T = I - 1 1^T / C."""
    c = int(c)
    u = np.zeros((c, c - 1))
    for k in range(1, c):
        u[:k, k - 1] = 1.0
        u[k, k - 1] = -float(k)
        u[:, k - 1] /= np.sqrt(k * (k + 1.0))
    return u


def _ce_value(f, y):
    f = _pair(f, y)
    return -jnp.sum(y * jax.nn.log_softmax(f, axis=-1), axis=(-2, -1)) / f.shape[-2]


def _probability_hessian(p):
    """diag(p) - p p^T over the last axis: (..., C) probabilities -> (..., C, C). The diagonal
    p_c (1 - p_c) is formed as p_c sum_{d != c} p_d: a sum of positive terms, so it keeps its
    relative accuracy when p_c rounds to 1 (1 - p_c would cancel to 0 and leave H indefinite)."""
    eye = jnp.eye(p.shape[-1], dtype=p.dtype)
    others = jnp.einsum("...d,dc->...c", p, 1 - eye)
    return eye * (p * others)[..., None] - (1 - eye) * (p[..., :, None] * p[..., None, :])


def _ce_pinv(f, y):
    """H^+ (p - y) = (1/p_y) (1/C - y) for one-hot y, with 1/p_y = exp(-log p_y): exact for every
    probability (no r_y = p_y - 1 that rounds to 0, no division by an underflowed p)."""
    inv_py = jnp.exp(-jnp.sum(y * jax.nn.log_softmax(f, axis=-1), -1, keepdims=True))
    return inv_py * (1.0 / f.shape[-1] - y)


def _ratio(r, log_p):
    """r / p from log p without overflow or 0 x inf: sign(r) exp(log|r| - log p) (0 where r = 0)."""
    r = jnp.asarray(r)
    mag = jnp.abs(r)
    safe = jnp.where(mag > 0, mag, 1.0)
    return jnp.where(mag > 0, jnp.sign(r) * jnp.exp(jnp.log(safe) - log_p), 0.0)


def _ce_pinv_apply(f, r):
    """H^+ r for r with zero sum per sample (H = diag(p) - p p^T): x = q - mean(q), q = r / p.
    The entry at the most probable class is taken as minus the sum of the others (r = p - y
    computed in floating point has lost it to cancellation when p is near 1: 1 - p_y rounds), and
    r / p is formed in the log domain (`_ratio`: no overflow, no 0 x inf). r is used as given: an
    entry that underflowed to 0 (p - y where p < 1e-308) cannot be recovered; `from_targets`
    computes H^+ r exactly from the targets instead."""
    log_p = jax.nn.log_softmax(f, axis=-1)
    top = jax.nn.one_hot(jnp.argmax(log_p, -1), f.shape[-1], dtype=r.dtype)
    others = jnp.sum(r * (1 - top), -1, keepdims=True)
    r = jnp.where(top > 0, -others, r)
    q = _ratio(r, log_p)
    return q - q.mean(-1, keepdims=True)


def _one_hot(y, name, n, c):
    c = int(c)
    if c < 2:
        raise ValueError(f"cross-entropy needs C >= 2 outputs (classes) for the softmax; the "
                         f"network has out_dim = {c} (use sigmoid_binary_cross_entropy or mse)")
    arr = _checks.as_array(y, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one-hot labels of shape (points, classes) = "
                         f"({n if n is not None else 'N'}, {c}), got shape {arr.shape} "
                         "(convert class indices with jax.nn.one_hot(labels, C))")
    if arr.shape[1] != c:
        raise ValueError(f"{name} has {arr.shape[1]} classes (columns) but the network has "
                         f"out_dim = {c} outputs: wrong class count")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} points but {n} were expected")
    ok = np.all((arr == 0) | (arr == 1), 1) & (arr.sum(1) == 1)
    if not ok.all():
        raise ValueError(f"{name} is not one-hot: {int((~ok).sum())} row(s) are not a single 1 "
                         "among 0s (soft labels are not supported: H^+ r needs one-hot y)")
    return arr.astype(np.float64)


softmax_cross_entropy = Loss(
    "softmax_cross_entropy", _ce_value, lambda f, y: jax.nn.softmax(f, axis=-1) - y,
    lambda f: _probability_hessian(jax.nn.softmax(f, axis=-1)), _ce_pinv, complement_basis,
    _one_hot, lambda f, y: coded_accuracy(f, y, ("argmax", None)), _ce_pinv_apply,
    out_dims=(2, None))


# ---------------------------------------------------------------------------- sigmoid binary CE
def _bce_value(f, y):
    f = _pair(f, y)
    per = y * jax.nn.softplus(-f) + (1 - y) * jax.nn.softplus(f)   # -y log p - (1-y) log(1-p)
    return jnp.sum(per, axis=(-2, -1)) / f.shape[-2]


def _bce_hessian(f):
    p = jax.nn.sigmoid(f)
    return (p * jax.nn.sigmoid(-f))[:, :, None]


def _bce_pinv(f, y):
    """(p - y) / (p (1 - p)) = -(1 + e^{-f}) = -exp(softplus(-f)) for y = 1 and 1 + e^{f} =
    exp(softplus(f)) for y = 0, chosen per entry (no 0 x inf): exact for every logit; it
    overflows only where the true value does (a confident wrong prediction, |f| > ~709 in
    float64, ~88 in float32)."""
    f = jnp.asarray(f)
    return jnp.where(jnp.asarray(y) > 0.5, -jnp.exp(jax.nn.softplus(-f)),
                     jnp.exp(jax.nn.softplus(f)))


def _bce_pinv_apply(f, r):
    """H^+ r = r / (p (1 - p)) = r exp(softplus(f) + softplus(-f)), in the log domain (`_ratio`)."""
    f = jnp.asarray(f)
    return _ratio(r, -(jax.nn.softplus(f) + jax.nn.softplus(-f)))


def _binary(y, name, n, c):
    if int(c) != 1:
        raise ValueError(f"sigmoid binary cross-entropy needs one output (C = 1); the network has "
                         f"out_dim = {c}")
    arr = _checks.outputs(y, name, n, 1)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold binary targets 0 or 1 for the sigmoid cross-entropy")
    return arr.astype(np.float64)


def _binary_accuracy(f, y):
    f, y = jnp.asarray(f), jnp.asarray(y)
    return jnp.mean((f[..., 0] > 0) == (y[..., 0] > 0.5), axis=-1)


sigmoid_binary_cross_entropy = Loss(
    "sigmoid_binary_cross_entropy", _bce_value, lambda f, y: jax.nn.sigmoid(f) - y, _bce_hessian,
    _bce_pinv, lambda c: np.eye(c), _binary, _binary_accuracy,
    _bce_pinv_apply, out_dims=(1, 1))


# ---------------------------------------------------------------------------- registry
LOSSES: dict[str, Loss] = {}
_ALIASES = {"ce": "softmax_cross_entropy", "cross_entropy": "softmax_cross_entropy",
            "bce": "sigmoid_binary_cross_entropy"}


def register_loss(loss: Loss, *aliases: str) -> Loss:
    """Make `loss` available by name (and aliases) to every function that takes loss=."""
    if not isinstance(loss, Loss):
        raise TypeError(f"register_loss needs an ntkngd.losses.Loss, got {type(loss).__name__}")
    LOSSES[loss.name] = loss
    for a in aliases:
        _ALIASES[a] = loss.name
    return loss


for _l in (mse, softmax_cross_entropy, sigmoid_binary_cross_entropy):
    register_loss(_l)


def get_loss(loss: Union[str, Loss, Any]) -> Loss:
    """The `Loss` named `loss` (or `loss` itself); a clear error for an unknown name."""
    if isinstance(loss, Loss):
        return loss
    key = _ALIASES.get(str(loss).lower(), str(loss).lower())
    if key not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} (alias 'ce') or "
                         "pass an ntkngd.losses.Loss")
    return LOSSES[key]
