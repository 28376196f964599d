"""Offline data sets with the preprocessing of Karakida & Osawa (NeurIPS 2020): `Dataset` and the
preprocessing (dataset.py), Forster's transform (forster.py), bundled and synthetic sets
(datasets.py), readers of the user's files (loaders.py); `load(name, **kw)` dispatches by name.

Conventions: inputs are float64 (N, d), one point per row; targets float64 (N, C), binary as one
column (+0.5 for the first class, -0.5 for the other, the paper's), else one-hot in the order of
`classes`. The default preprocessing is the authors' (`preprocess`, standardize="global"):
subtract ONE global mean, divide by ONE global std of the training array, then unit-norm rows;
the training statistics serve both splits (the authors' code uses each split's own). PCA
whitening and Forster's transform (the paper applies it to K-FAC's inputs, when N > d) are
options. Nothing is downloaded.
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
