"""Bundled and synthetic data sets: scikit-learn's 8 x 8 digits (optionally PCA-whitened),
Gaussian inputs with a teacher, and points on the sphere, each prepared as `ntkngd.data`
describes (the authors' preprocessing by default); `ntkngd.data` exports every name here."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._checks import non_negative_int, positive_int
from .dataset import (Dataset, _build, _disjoint, _resolve_classes, finite, flatten, preprocess,
                      select_classes, unit_norm_rows)


def pca_whiten(x_fit: Any, *xs: Any, rtol: float = 1e-8) -> tuple[np.ndarray, ...]:
    """PCA-whiten arrays with the mean and covariance of `x_fit` (rows are points), keeping the
    components whose variance exceeds rtol times the largest; returns each of `xs` whitened.
    Fit on a pool larger than the training set: centring N points on their own mean leaves rank
    N - 1, which breaks K-FAC's first-layer condition."""
    fit = finite(flatten(x_fit), "x_fit")
    mu = fit.mean(0)
    _, s, vt = np.linalg.svd(fit - mu, full_matrices=False)
    if not s.size or s[0] == 0:
        raise ValueError(f"pca_whiten: x_fit (shape {fit.shape}) has no variance to whiten")
    keep = s > rtol * s[0]
    proj = vt[keep].T / s[keep] * np.sqrt(len(fit))
    return tuple((finite(flatten(x), "x") - mu) @ proj for x in xs)


def digits(n_train: int = 100, n_test: int = 100, classes: Sequence[int] | None = (0, 1),
           binary: bool | None = True, seed: int = 0, standardize: str = "global",
           unit_norm: bool = True, whiten: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 digits (d = 64, pixels 0..16, about 180 points per class).

    `classes` (None: all ten) shuffled with `seed` (None: file order); the first n_train train,
    the next n_test test. binary=True: +-0.5 for classes[0] / [1]; False: one-hot; None: binary
    iff two classes. Inputs `preprocess`ed; whiten=True (not the paper's) first PCA-whitens with
    the images of `classes` outside the test split (d: the non-degenerate components, ~50 for
    0 vs 1; raw digits have constant border pixels, input Gram condition ~1e5)."""
    from sklearn.datasets import load_digits  # lazy: sklearn is only needed here

    raw = load_digits()
    classes, binary = _resolve_classes(classes, binary, range(10))
    x, lab = select_classes(raw.images, raw.target, classes)
    tr, te = _disjoint(len(lab), n_train, n_test, seed, "digits",
                       f"points of classes {classes} exist")
    x = flatten(x)
    if whiten:
        pool = np.setdiff1d(np.arange(len(lab)), te)
        x = pca_whiten(x[pool], x)[0]
    return _build(f"digits{classes}" + (" whitened" if whiten else ""), x[tr], lab[tr], x[te],
                  lab[te], classes, binary, standardize, unit_norm,
                  before="PCA whitening (pool of non-test images)" if whiten else "")


_TEACHERS = ("linear", "random")


def _sizes(n_train: int, n_test: int, dim: int, out_dim: int) -> tuple[int, int, int, int]:
    return (positive_int(n_train, "n_train"), non_negative_int(n_test, "n_test"),
            positive_int(dim, "dim"), positive_int(out_dim, "out_dim"))


def gaussian(n_train: int, n_test: int, dim: int, out_dim: int = 1, seed: int = 0,
             teacher: str = "linear", standardize: str = "global",
             unit_norm: bool = True) -> Dataset:
    """Inputs with i.i.d. N(0, 1) entries, then `preprocess`ed.

    teacher="linear": y = x W / r on the preprocessed x, W ~ N(0, 1)^(dim x out_dim) from `seed`
    (one teacher for both splits), r the rms row norm (unit-variance targets); "random": +-0.5
    with probability 1/2. labels: the sign (out_dim 1, classes (1, -1)), else the argmax."""
    if teacher not in _TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}; expected one of {_TEACHERS}")
    n_train, n_test, dim, out_dim = _sizes(n_train, n_test, dim, out_dim)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim))
    xtr, xte, how = preprocess(x[:n_train], x[n_train:], standardize, unit_norm)
    x = np.concatenate([xtr, xte])
    if teacher == "linear":
        w = rng.standard_normal((dim, out_dim))
        y = x @ w / np.sqrt(np.mean(np.sum(x * x, axis=1)))
    else:
        y = rng.choice(np.array([-0.5, 0.5]), size=(n_train + n_test, out_dim))
    if out_dim == 1:
        labels, classes = np.where(y[:, 0] > 0, 1, -1), (1, -1)
    else:
        labels, classes = np.argmax(y, axis=1), tuple(range(out_dim))
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   labels[:n_train].astype(np.int64), labels[n_train:].astype(np.int64),
                   classes, f"gaussian(dim={dim}, teacher={teacher})", how)


def sphere(n_train: int, n_test: int, dim: int, seed: int = 0) -> Dataset:
    """Points uniform on the unit sphere in R^dim with random +-0.5 targets (the paper's check):
    labels +1 / -1 (classes (1, -1)) drawn independently of the inputs, target = label / 2. The
    inputs already have unit-norm rows and zero mean in expectation; they are not re-standardized
    (so they stay exactly uniform)."""
    n_train, n_test, dim, _ = _sizes(n_train, n_test, dim, 1)
    rng = np.random.default_rng(seed)
    x = unit_norm_rows(rng.standard_normal((n_train + n_test, dim)))
    labels = rng.choice(np.array([1, -1]), size=n_train + n_test).astype(np.int64)
    y = 0.5 * labels.astype(np.float64)[:, None]
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], labels[:n_train],
                   labels[n_train:], (1, -1), f"sphere(dim={dim})",
                   "uniform on the unit sphere (unit-norm rows)")
