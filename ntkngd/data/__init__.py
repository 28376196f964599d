"""Offline data sets with the preprocessing of Karakida & Osawa (NeurIPS 2020): `Dataset` and the
preprocessing (dataset.py), Forster's transform (forster.py), bundled and synthetic sets
(datasets.py), readers of files the user has (loaders.py). Names load on first use (PEP 562);
`load(name, **kw)` dispatches by name.

Conventions (every function here):
  * inputs are float64 (N, d) arrays, one point per row, images flattened; targets are float64
    (N, C): binary problems use one column, +0.5 for the positive class and -0.5 for the other
    (the paper's), multi-class problems one-hot columns in the order of `classes`;
  * the default preprocessing is the authors' (`preprocess`, standardize="global"): flatten,
    subtract ONE global mean and divide by ONE global std of the whole training array (scalars,
    not per feature), then scale every row to unit Euclidean norm. The training statistics are
    applied to both splits (the authors' code uses each split's own; ours keep the test set out
    of the fit). PCA whitening (`digits(whiten=True)`) and Forster's transform
    (`forster_dataset`; the paper applies it to K-FAC's inputs only, when N > d) are options;
  * nothing is downloaded: real data come from scikit-learn's bundled `digits` or from files the
    user has (MNIST IDX / npz, CIFAR-10 python batches, npz).
"""
from __future__ import annotations

from typing import Any

from .._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, str]] = {name: (module, name) for module, names in (
    (".dataset", ("Dataset", "flatten", "standardize", "global_standardize", "preprocess",
                  "STANDARDIZE", "select_classes", "binary_targets", "one_hot", "unit_norm_rows")),
    (".forster", ("forster_transform", "forster_fit", "forster_fit_span", "span_isotropy_error",
                  "forster_apply", "forster_dataset", "ForsterMap", "isotropy_error")),
    (".datasets", ("digits", "gaussian", "pca_whiten", "sphere")),
    (".loaders", ("load_mnist", "load_cifar10", "load_npz"))) for name in names}

DATASETS: dict[str, str] = {   # name -> the function (exported here) that builds it
    "digits": "digits", "gaussian": "gaussian", "sphere": "sphere", "mnist": "load_mnist",
    "cifar10": "load_cifar10", "npz": "load_npz"}

__all__ = sorted(_EXPORTS) + ["DATASETS", "load"]

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


def load(name: str, **kwargs: Any):
    """Dispatch to a data set by name: digits, gaussian, sphere, mnist, cifar10 or npz."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return __getattr__(DATASETS[key])(**kwargs)
