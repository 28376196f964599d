"""The `Dataset` container, row-wise checks (finite arrays, unit-norm rows) and the input/target
preparation every data set shares (conventions: `ntkngd.data`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .._checks import integer



# ----------------------------------------------------------------------------- container
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split: x_* (N, d) inputs, y_* (N, C) targets, labels_* (N,) original integer
    labels (e.g. the digit); classes: the labels in target-column order (binary: the first is
    +0.5); name; preprocessing: the steps applied to the inputs; source: how the points were drawn
    (files, rule, seed)."""

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
            if x.ndim != 2 or y.ndim != 2 or lab.ndim != 1 or \
                    not x.shape[0] == y.shape[0] == lab.shape[0]:
                raise ValueError(f"Dataset {self.name!r}: x_{split} must be (N, d), y_{split} "
                                 f"(N, C) and labels_{split} (N,) with one N, got shapes "
                                 f"{x.shape}, {y.shape}, {lab.shape}")
        for what, train, test in (("input features", self.x_train, self.x_test),
                                  ("target columns", self.y_train, self.y_test)):
            if train.shape[1] != test.shape[1]:
                raise ValueError(f"Dataset {self.name!r}: the train split has {train.shape[1]} "
                                 f"{what} but the test split has {test.shape[1]}")

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
def finite(x: Any, name: str) -> np.ndarray:
    """x as a float64 array; NaN or inf is a ValueError naming `name`."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} NaN or inf value(s)")
    return arr


def unit_norm_rows(x: Any) -> np.ndarray:
    """Scale every row of the (N, d) array to unit Euclidean norm; a zero row is a ValueError."""
    arr = finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"unit_norm_rows expects a 2-D (N, d) array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"cannot scale zero row(s) to unit norm: row index(es) "
                         f"{zero[:10].tolist()}{' ...' if zero.size > 10 else ''} have norm 0")
    return arr / norms[:, None]


def flatten(x: Any) -> np.ndarray:
    """(N, ...) -> (N, prod(...)) float64, row-major (C order), one point per row (N >= 0)."""
    arr = np.asarray(x)
    if arr.ndim < 1:
        raise ValueError("flatten expects an array of shape (N, ...), got a scalar")
    width = int(np.prod(arr.shape[1:], dtype=np.int64))
    return np.ascontiguousarray(arr.reshape(arr.shape[0], width), dtype=np.float64)


def _standardized(x_train: Any, x_test: Any, axis: int | None,
                  who: str) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std with the training statistics over `axis`; a zero std is replaced by 1."""
    xtr, xte = finite(x_train, "x_train"), finite(x_test, "x_test")
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1] or not len(xtr):
        raise ValueError(f"{who} expects x_train (N, d) with N >= 1 and x_test (N', d), got "
                         f"shapes {xtr.shape} and {xte.shape}")
    mean, std = xtr.mean(axis=axis), xtr.std(axis=axis)
    scale = np.where(std > 0, std, 1.0)
    return (xtr - mean) / scale, (xte - mean) / scale


def standardize(x_train: Any, x_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std per feature with the training statistics for both sets; features with
    zero training std are only centred. Returns new float64 arrays (x_train, x_test)."""
    return _standardized(x_train, x_test, 0, "standardize")


def global_standardize(x_train: Any, x_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x - m) / s with ONE scalar mean m and ONE scalar std s of the whole training array.

    Both splits use the training scalars; a constant training array (s = 0) is only centred."""
    return _standardized(x_train, x_test, None, "global_standardize")


STANDARDIZE = ("global", "feature", "none")
_STEPS = {"global": (global_standardize, "global standardization (one mean and std of the "
                                         "training array)"),
          "feature": (standardize, "per-feature standardization (training statistics)")}


def preprocess(x_train: Any, x_test: Any, standardize: str = "global",
               unit_norm: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Flatten, standardize (default: one global mean/std of the training array), then scale
    every row to unit norm (the authors' pipeline). Returns (x_train, x_test, description)."""
    mode = "none" if standardize is False or standardize is None else standardize
    if not isinstance(mode, str) or mode not in STANDARDIZE:
        raise ValueError(f"standardize must be one of {STANDARDIZE} ('global': one scalar mean "
                         f"and std over the training array, the paper's default; 'feature': per "
                         f"feature), got {standardize!r}")
    xtr, xte = finite(flatten(x_train), "x_train"), finite(flatten(x_test), "x_test")
    if not len(xtr):
        raise ValueError(f"preprocess needs at least one training point, got {np.shape(x_train)}")
    steps = []
    if mode != "none":
        function, step = _STEPS[mode]
        xtr, xte = function(xtr, xte)
        steps.append(step)
    if unit_norm:
        xtr, xte = unit_norm_rows(xtr), unit_norm_rows(xte)
        steps.append("unit-norm rows")
    return xtr, xte, " + ".join(steps) if steps else "none"


def _distinct(classes: Sequence[Any]) -> tuple:
    """`classes` as a tuple; an empty sequence or a repeated class is a ValueError."""
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty sequence of distinct labels, got {classes}")
    return classes


def _labels_1d(labels: Any, what: str = "labels") -> np.ndarray:
    """labels as a 1-D array; NaN or inf (in float labels) is a ValueError."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {labels.shape}")
    if labels.dtype.kind in "fc" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{what} contain NaN or inf")
    return labels


def select_classes(x: Any, labels: Any, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels) of the points whose label is in `classes`, in their original order (x keeps
    its trailing shape and dtype)."""
    x, labels = np.asarray(x), _labels_1d(labels)
    if x.shape[:1] != labels.shape:
        raise ValueError(f"select_classes expects labels of shape (N,) matching x of shape "
                         f"(N, ...), got x {x.shape} and labels {labels.shape}")
    mask = np.isin(labels, np.asarray(_distinct(classes)))
    return x[mask], labels[mask]


def binary_targets(labels: Any, positive_class: int) -> np.ndarray:
    """(N,) labels -> (N, 1) targets: +0.5 where label == positive_class, else -0.5."""
    return np.where(_labels_1d(labels) == positive_class, 0.5, -0.5).astype(np.float64)[:, None]


def one_hot(labels: Any, classes: Sequence[int]) -> np.ndarray:
    """(N,) labels -> (N, C) float64 one-hot targets, column c for classes[c]."""
    labels, classes = _labels_1d(labels), _distinct(classes)
    eq = labels[:, None] == np.asarray(classes)[None, :]
    missing = ~eq.any(axis=1)
    if missing.any():
        bad = sorted(set(labels[missing].tolist()))
        raise ValueError(f"labels {bad[:10]} are not among the classes {classes}")
    return eq.astype(np.float64)


# ----------------------------------------------------------------------------- shared pipeline
def _check_labels(labels: np.ndarray, source: str, n_classes: int | None = 10) -> np.ndarray:
    """Integer labels in 0..n_classes-1 (only >= 0 when n_classes is None), as int64."""
    labels = _labels_1d(labels, f"{source}: labels")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
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
    classes = _distinct(all_classes if classes is None else (int(c) for c in classes))
    unknown = [c for c in classes if c not in set(all_classes)]
    if unknown:
        raise ValueError(f"classes {unknown} do not exist; available classes are "
                         f"{tuple(all_classes)}")
    binary = len(classes) == 2 if binary is None else bool(binary)
    if binary and len(classes) != 2:
        raise ValueError(f"binary targets need exactly 2 classes, got {len(classes)}: {classes}")
    return classes, binary


def _count(n: Any, what: str) -> int:
    """A number of points: an integer >= 1 (an empty split has no meaning here)."""
    try:
        n = integer(n, what)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: the number of points must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{what}: the number of points must be >= 1 (the split would be "
                         f"empty), got {n}")
    return n


def _order(n: int, seed: int | None) -> np.ndarray:
    """0..n-1 in file order (seed None) or permuted by numpy's default_rng(seed)."""
    return np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)


def _take(n_avail: int, n: int | None, seed: int | None, what: str) -> np.ndarray:
    """Indices of the first n points (None: all), in file order or a seeded permutation."""
    if n is None and n_avail == 0:
        raise ValueError(f"{what}: no points of the chosen classes (the split is empty)")
    n = _count(n_avail if n is None else n, what)
    if n > n_avail:
        raise ValueError(f"{what}: requested {n} points but only {n_avail} are available "
                         f"in the chosen classes")
    return _order(n_avail, seed)[:n]


def _disjoint(n_avail: int, n_train: int | None, n_test: int | None, seed: int | None,
              who: str, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of disjoint training and test points drawn from one pool of n_avail points (file
    order or a seeded permutation): the first n_train (None: half), the next n_test (None: the
    rest). `pool` completes the error message 'only {n_avail} ...'."""
    n_train = _count(n_avail // 2 if n_train is None else n_train, f"{who} n_train")
    n_test = _count(n_avail - n_train if n_test is None else n_test, f"{who} n_test")
    if n_train + n_test > n_avail:
        raise ValueError(f"{who}: requested n_train={n_train} + n_test={n_test} points but only "
                         f"{n_avail} {pool}")
    order = _order(n_avail, seed)
    return order[:n_train], order[n_train:n_train + n_test]


def _build(name: str, x_tr: np.ndarray, lab_tr: np.ndarray, x_te: np.ndarray, lab_te: np.ndarray,
           classes: tuple, binary: bool, standardize: str, unit_norm: bool,
           before: str = "", source: str = "") -> Dataset:
    """`preprocess` the inputs (training statistics), make targets."""
    xtr, xte, how = preprocess(x_tr, x_te, standardize, unit_norm)
    how = before + " + " + how if before else how
    if binary:
        ytr, yte = binary_targets(lab_tr, classes[0]), binary_targets(lab_te, classes[0])
    else:
        ytr, yte = one_hot(lab_tr, classes), one_hot(lab_te, classes)
    return Dataset(xtr, ytr, xte, yte, np.asarray(lab_tr, np.int64), np.asarray(lab_te, np.int64),
                   tuple(classes), name, how, source)


def _from_splits(name: str, x_tr: np.ndarray, lab_tr: np.ndarray, x_te: np.ndarray,
                 lab_te: np.ndarray, all_classes: Sequence[int], n_train: int | None,
                 n_test: int | None, classes: Sequence[int] | None, binary: bool | None,
                 seed: int | None, standardize: str, unit_norm: bool,
                 source: str = "") -> Dataset:
    """The first n_train / n_test points of `classes` of each split (seeded with seed and
    seed + 1 when given), prepared by `_build`."""
    classes, binary = _resolve_classes(classes, binary, all_classes)
    x_tr, lab_tr = select_classes(x_tr, lab_tr, classes)
    x_te, lab_te = select_classes(x_te, lab_te, classes)
    i_tr = _take(len(lab_tr), n_train, seed, f"{name} training set")
    i_te = _take(len(lab_te), n_test, None if seed is None else seed + 1, f"{name} test set")
    return _build(name, x_tr[i_tr], lab_tr[i_tr], x_te[i_te], lab_te[i_te], classes, binary,
                  standardize, unit_norm, source=source)
