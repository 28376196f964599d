"""Offline data sets with the preprocessing of Karakida & Osawa (NeurIPS 2020).

    dataset.py   `Dataset`, preprocessing (standardize, unit-norm rows), targets, class choice
    rows.py      row-wise checks shared by the modules below
    forster.py   Forster's transform (isotropic position of the inputs)
    datasets.py  bundled and synthetic sets: digits (optionally PCA-whitened), gaussian, sphere
    loaders.py   readers of files the user has: MNIST, CIFAR-10, npz
Every public name is exported here, loaded on first use (PEP 562); `load(name, **kw)` dispatches.

Conventions (every function here):
  * inputs are float64 arrays of shape (N, d): one point per row, images flattened;
  * targets are float64 arrays of shape (N, C); binary problems use one column with
    +0.5 for the positive class and -0.5 for the other (as in the paper), multi-class
    problems use one-hot columns (1 / 0) in the order of `classes`;
  * the default input preprocessing is the authors' (Karakida & Osawa's code,
    `_partial_flatten_and_normalize` then a per-row division by the norm): flatten, subtract ONE
    global mean and divide by ONE global std computed over the whole (N, d) array (scalars, not
    per feature), then scale every row to unit Euclidean norm (`preprocess`, standardize="global").
    The statistics are the training array's and are applied to both splits (the authors' code
    uses each split's own scalars; training statistics keep the test set out of the fit).
    PCA whitening (`digits(whiten=True)`) and Forster's transform (`forster_dataset`) are explicit
    options; the paper applies Forster only to K-FAC's inputs and only when N > d;
  * nothing is ever downloaded: real data come from scikit-learn's bundled `digits` or
    from files the user already has (MNIST IDX / npz, CIFAR-10 python batches, npz).
"""
from __future__ import annotations

from typing import Any

from .._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, str]] = {name: (module, name) for module, names in (
    (".dataset", ("Dataset", "flatten", "standardize", "global_standardize", "preprocess",
                  "STANDARDIZE", "select_classes", "binary_targets", "one_hot")),
    (".rows", ("unit_norm_rows",)),
    (".forster", ("forster_transform", "forster_fit", "forster_fit_span", "span_isotropy_error",
                  "forster_apply", "forster_dataset", "ForsterMap", "isotropy_error")),
    (".datasets", ("digits", "gaussian", "pca_whiten", "sphere")),
    (".loaders", ("load_mnist", "load_cifar10", "load_npz"))) for name in names}

DATASETS: dict[str, str] = {   # name -> the function (exported here) that builds it
    "digits": "digits", "gaussian": "gaussian", "sphere": "sphere",
    "mnist": "load_mnist", "cifar10": "load_cifar10", "npz": "load_npz",
}

__all__ = sorted(_EXPORTS) + ["DATASETS", "load"]

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


def load(name: str, **kwargs: Any):
    """Dispatch to a data set by name: digits, gaussian, sphere, mnist, cifar10 or npz."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return __getattr__(DATASETS[key])(**kwargs)
