"""The `Dataset` container and the input/target preparation every data set shares (conventions:
`ntkngd.data`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .rows import finite, unit_norm_rows


# ----------------------------------------------------------------------------- container
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split with targets and integer labels.

    x_*: (N, d) float64 inputs; y_*: (N, C) float64 targets; labels_*: (N,) int original class
    labels (e.g. the digit); classes: original labels in target-column order (for binary
    targets the first class is +0.5); name: short description of the source; preprocessing: the
    steps applied to the inputs; source: where the points were drawn from (files, rule, seed).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    classes: tuple
    name: str
    preprocessing: str = "none"
    source: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y, lab = (getattr(self, f"{k}_{split}") for k in ("x", "y", "labels"))
            if x.ndim != 2 or y.ndim != 2 or lab.ndim != 1:
                raise ValueError(f"Dataset {self.name!r}: x_{split} must be (N, d), y_{split} (N, C) "
                                 f"and labels_{split} (N,), got shapes {x.shape}, {y.shape}, "
                                 f"{lab.shape}")
            if not (x.shape[0] == y.shape[0] == lab.shape[0]):
                raise ValueError(f"Dataset {self.name!r}: {split} split has {x.shape[0]} inputs, "
                                 f"{y.shape[0]} targets and {lab.shape[0]} labels; they must match")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(f"Dataset {self.name!r}: train inputs have {self.x_train.shape[1]} "
                             f"features but test inputs have {self.x_test.shape[1]}")
        if self.y_train.shape[1] != self.y_test.shape[1]:
            raise ValueError(f"Dataset {self.name!r}: train targets have {self.y_train.shape[1]} "
                             f"columns but test targets have {self.y_test.shape[1]}")

    @property
    def n_train(self) -> int:
        """Training points N."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Test points N'."""
        return int(self.x_test.shape[0])

    @property
    def input_dim(self) -> int:
        """Input dimension d."""
        return int(self.x_train.shape[1])

    @property
    def out_dim(self) -> int:
        """Outputs C (1 for +-0.5 targets, else classes)."""
        return int(self.y_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
                f"input_dim={self.input_dim}, out_dim={self.out_dim}, classes={self.classes})")


# ----------------------------------------------------------------------------- preprocessing
_finite = finite


def flatten(x: Any) -> np.ndarray:
    """(N, ...) -> (N, prod(...)) float64, row-major (C order), one point per row."""
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError(f"flatten expects an array of shape (N, ...) with N >= 1, got {arr.shape}")
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float64)


def standardize(x_train: Any, x_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training per-feature mean and divide by the training per-feature std.

    Both sets use the training statistics. Features with zero training std are only centred
    (no division by zero). Returns (x_train, x_test) as new float64 arrays.
    """
    xtr = _finite(x_train, "x_train")
    xte = _finite(x_test, "x_test")
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"standardize expects x_train (N, d) and x_test (N', d), got shapes "
                         f"{xtr.shape} and {xte.shape}")
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return (xtr - mean) / scale, (xte - mean) / scale


_standardize = standardize  # parameters named `standardize` shadow the function below


def global_standardize(x_train: Any, x_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x - m) / s with ONE scalar mean m and ONE scalar std s of the whole training array.

    Both splits use the training scalars. A constant training array (s = 0) is only centred.
    Returns (x_train, x_test) as new float64 arrays.
    """
    xtr = _finite(x_train, "x_train")
    xte = _finite(x_test, "x_test")
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"global_standardize expects x_train (N, d) and x_test (N', d), got "
                         f"shapes {xtr.shape} and {xte.shape}")
    mean, std = float(xtr.mean()), float(xtr.std())
    scale = std if std > 0 else 1.0
    return (xtr - mean) / scale, (xte - mean) / scale


STANDARDIZE = ("global", "feature", "none")


def _standardize_mode(standardize: Any) -> str:
    if standardize is False or standardize is None:
        return "none"
    if not isinstance(standardize, str) or standardize not in STANDARDIZE:
        raise ValueError(f"standardize must be one of {STANDARDIZE} ('global': one scalar mean "
                         f"and std over the training array, the paper's default; 'feature': per "
                         f"feature), got {standardize!r}")
    return standardize


def preprocess(x_train: Any, x_test: Any, standardize: str = "global",
               unit_norm: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Flatten, standardize (default: one global mean/std of the training array), then scale
    every row to unit norm (the authors' pipeline). Returns (x_train, x_test, description)."""
    mode = _standardize_mode(standardize)
    xtr, xte = flatten(x_train), flatten(x_test)
    steps = []
    if mode == "global":
        xtr, xte = global_standardize(xtr, xte)
        steps.append("global standardization (one mean and std of the training array)")
    elif mode == "feature":
        xtr, xte = _standardize(xtr, xte)
        steps.append("per-feature standardization (training statistics)")
    if unit_norm:
        xtr, xte = unit_norm_rows(xtr), unit_norm_rows(xte)
        steps.append("unit-norm rows")
    return xtr, xte, " + ".join(steps) if steps else "none"


def select_classes(x: Any, labels: Any, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the points whose label is in `classes`, in their original order.

    Returns (x_subset, labels_subset); x keeps its trailing shape and dtype.
    """
    x = np.asarray(x)
    labels = np.asarray(labels)
    if labels.ndim != 1 or x.shape[:1] != labels.shape:
        raise ValueError(f"select_classes expects labels of shape (N,) matching x of shape (N, ...), "
                         f"got x {x.shape} and labels {labels.shape}")
    classes = tuple(classes)
    if len(classes) == 0:
        raise ValueError("select_classes needs at least one class, got an empty sequence")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {classes}")
    mask = np.isin(labels, np.asarray(classes))
    return x[mask], labels[mask]


def binary_targets(labels: Any, positive_class: int) -> np.ndarray:
    """(N,) labels -> (N, 1) targets: +0.5 where label == positive_class, else -0.5."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    return np.where(labels == positive_class, 0.5, -0.5).astype(np.float64)[:, None]


def one_hot(labels: Any, classes: Sequence[int]) -> np.ndarray:
    """(N,) labels -> (N, C) float64 one-hot targets, column c for classes[c]."""
    labels = np.asarray(labels)
    classes = tuple(classes)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be a non-empty sequence of distinct labels, got {classes}")
    eq = labels[:, None] == np.asarray(classes)[None, :]
    missing = ~eq.any(axis=1)
    if missing.any():
        bad = sorted(set(labels[missing].tolist()))
        raise ValueError(f"labels {bad[:10]} are not among the classes {classes}")
    return eq.astype(np.float64)


# ----------------------------------------------------------------------------- shared pipeline
def _check_labels(labels: np.ndarray, source: str, n_classes: int | None = 10) -> np.ndarray:
    """Integer labels in 0..n_classes-1 (only >= 0 when n_classes is None), as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{source}: labels must be a 1-D array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = labels < 0 if n_classes is None else (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        allowed = ">= 0" if n_classes is None else f"0..{n_classes - 1}"
        raise ValueError(f"{source}: {int(bad.sum())} label(s) outside {allowed} "
                         f"(first at index {i}: {labels[i]})")
    return labels


def _resolve_classes(classes: Sequence[int] | None, binary: bool | None,
                     all_classes: Sequence[int]) -> tuple[tuple, bool]:
    classes = tuple(all_classes) if classes is None else tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty sequence of distinct labels, got {classes}")
    unknown = [c for c in classes if c not in set(all_classes)]
    if unknown:
        raise ValueError(f"classes {unknown} do not exist; available classes are {tuple(all_classes)}")
    if binary is None:
        binary = len(classes) == 2
    if binary and len(classes) != 2:
        raise ValueError(f"binary targets need exactly 2 classes, got {len(classes)}: {classes}")
    return classes, bool(binary)


def _count(n: Any, what: str) -> int:
    """A number of points: an integer >= 1 (an empty split has no meaning here)."""
    from .._checks import integer
    try:
        n = integer(n, what)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: the number of points must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{what}: the number of points must be >= 1 (the split would be "
                         f"empty), got {n}")
    return n


def _take(n_avail: int, n: int | None, seed: int | None, what: str) -> np.ndarray:
    """Indices of the first n points, or of n points of a seeded permutation."""
    if n is None:
        if n_avail == 0:
            raise ValueError(f"{what}: no points of the chosen classes (the split is empty)")
        n = n_avail
    n = _count(n, what)
    if n > n_avail:
        raise ValueError(f"{what}: requested {n} points but only {n_avail} are available "
                         f"in the chosen classes")
    order = np.arange(n_avail) if seed is None else np.random.default_rng(seed).permutation(n_avail)
    return order[:n]


def _build(name: str, x_tr: np.ndarray, lab_tr: np.ndarray, x_te: np.ndarray, lab_te: np.ndarray,
           classes: tuple, binary: bool, standardize: str, unit_norm: bool,
           before: str = "") -> Dataset:
    """`preprocess` the inputs (training statistics), make targets."""
    xtr, xte, how = preprocess(x_tr, x_te, standardize, unit_norm)
    how = before + " + " + how if before else how
    if binary:
        ytr, yte = binary_targets(lab_tr, classes[0]), binary_targets(lab_te, classes[0])
    else:
        ytr, yte = one_hot(lab_tr, classes), one_hot(lab_te, classes)
    return Dataset(xtr, ytr, xte, yte, np.asarray(lab_tr, np.int64), np.asarray(lab_te, np.int64),
                   tuple(classes), name, how)


def _from_splits(name: str, x_tr: np.ndarray, lab_tr: np.ndarray, x_te: np.ndarray,
                 lab_te: np.ndarray, all_classes: Sequence[int], n_train: int | None,
                 n_test: int | None, classes: Sequence[int] | None, binary: bool | None,
                 seed: int | None, standardize: str, unit_norm: bool) -> Dataset:
    classes, binary = _resolve_classes(classes, binary, all_classes)
    x_tr, lab_tr = select_classes(x_tr, lab_tr, classes)
    x_te, lab_te = select_classes(x_te, lab_te, classes)
    i_tr = _take(len(lab_tr), n_train, seed, f"{name} training set")
    i_te = _take(len(lab_te), n_test, None if seed is None else seed + 1, f"{name} test set")
    return _build(name, x_tr[i_tr], lab_tr[i_tr], x_te[i_te], lab_te[i_te], classes, binary,
                  standardize, unit_norm)
