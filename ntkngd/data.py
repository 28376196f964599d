"""Offline data sets with the preprocessing of Karakida & Osawa (NeurIPS 2020).

Conventions (every function here):
  * inputs are float64 arrays of shape (N, d): one point per row, images flattened;
  * targets are float64 arrays of shape (N, C); binary problems use one column with
    +0.5 for the positive class and -0.5 for the other (as in the paper), multi-class
    problems use one-hot columns (1 / 0) in the order of `classes`;
  * the paper's default input preprocessing is: flatten, optionally standardize with
    training-set statistics, then scale every row to unit Euclidean norm;
  * nothing is ever downloaded: real data come from scikit-learn's bundled `digits` or
    from files the user already has (MNIST IDX / npz, CIFAR-10 python batches, npz).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "Dataset", "flatten", "standardize", "unit_norm_rows", "select_classes", "binary_targets",
    "one_hot", "pca_whiten", "forster_transform", "forster_fit", "forster_apply", "forster_dataset",
    "isotropy_error", "digits", "gaussian", "sphere",
    "load_mnist", "load_cifar10", "load_npz", "load", "DATASETS",
]


# ----------------------------------------------------------------------------- container
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split with targets and integer labels.

    x_*: (N, d) float64 inputs; y_*: (N, C) float64 targets; labels_*: (N,) int original class
    labels (e.g. the digit); classes: original labels in target-column order (for binary
    targets the first class is +0.5); name: short description of the source.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    classes: tuple
    name: str

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
def _finite(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} NaN or inf value(s)")
    return arr


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


def unit_norm_rows(x: Any) -> np.ndarray:
    """Scale every row of the (N, d) array to unit Euclidean norm; a zero row is a ValueError."""
    arr = _finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"unit_norm_rows expects a 2-D (N, d) array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"cannot scale zero row(s) to unit norm: row index(es) "
                         f"{zero[:10].tolist()}{' ...' if zero.size > 10 else ''} have norm 0")
    return arr / norms[:, None]


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


def isotropy_error(x: Any) -> float:
    """Relative deviation ||X^T X - (N/d) I||_F / ||(N/d) I||_F of an (N, d) array from isotropy."""
    arr = _finite(x, "x")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"isotropy_error expects a non-empty 2-D (N, d) array, got {arr.shape}")
    n, d = arr.shape
    target = n / d
    dev = arr.T @ arr - target * np.eye(d)
    return float(np.linalg.norm(dev) / (target * np.sqrt(d)))


def forster_fit(x: Any, iters: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """The d x d matrix M of Forster's transform x -> x M / ||x M||, fitted on the rows of x.

    After the map the rows have unit norm and X^T X = (N/d) I (isotropic position). Iterates
    X <- rownormalize(X (X^T X)^{-1/2}), accumulating M, until isotropy_error(X) < tol. Needs
    N >= d and X^T X non-singular (ValueError otherwise); points must be in general position for
    a solution to exist; a UserWarning is issued if `tol` is not reached after `iters` steps.
    Apply the same M to test points with `forster_apply`.
    """
    arr = _finite(x, "x")
    if arr.ndim != 2:
        raise ValueError(f"forster_transform expects a 2-D (N, d) array, got shape {arr.shape}")
    n, d = arr.shape
    if n < d:
        raise ValueError(f"forster_transform needs at least as many points as dimensions "
                         f"(N >= d), got N={n} < d={d}")
    if iters < 1 or tol <= 0:
        raise ValueError(f"iters must be >= 1 and tol > 0, got iters={iters}, tol={tol}")
    arr = unit_norm_rows(arr)
    target = n / d
    total = np.eye(d)
    for _ in range(iters):
        gram = arr.T @ arr
        err = np.linalg.norm(gram - target * np.eye(d)) / (target * np.sqrt(d))
        if err < tol:
            return total
        evals, evecs = np.linalg.eigh(gram)
        if evals[0] <= evals[-1] * max(n, d) * np.finfo(np.float64).eps:
            rank = int(np.sum(evals > evals[-1] * max(n, d) * np.finfo(np.float64).eps))
            raise ValueError(f"degenerate data: X^T X is singular (numerical rank {rank} < d={d}); "
                             f"the points must span R^d and be in general position")
        inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
        total = total @ inv_sqrt
        total /= np.linalg.norm(total, 2)          # scale is irrelevant; keep it O(1)
        arr = unit_norm_rows(arr @ inv_sqrt)
    err = isotropy_error(arr)
    if err >= tol:
        warnings.warn(f"forster_transform did not converge in {iters} iterations: isotropy error "
                      f"{err:.3e} >= tol {tol:.1e} (points may not be in general position)",
                      UserWarning, stacklevel=2)
    return total


def forster_apply(x: Any, matrix: np.ndarray) -> np.ndarray:
    """x -> x M / ||x M|| row-wise (M from `forster_fit`)."""
    return unit_norm_rows(_finite(x, "x") @ matrix)


def forster_transform(x: Any, iters: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """Put the rows of an (N, d) array in isotropic (radial) position: Forster's transform.

    Output rows have unit norm and X^T X = (N/d) I. See `forster_fit` for the algorithm and errors.
    """
    return forster_apply(x, forster_fit(x, iters, tol))


def forster_dataset(ds: "Dataset", iters: int = 5000, tol: float = 1e-10) -> "Dataset":
    """Fit Forster's transform on the training inputs and apply it to both splits."""
    import dataclasses
    m = forster_fit(ds.x_train, iters, tol)
    return dataclasses.replace(ds, x_train=forster_apply(ds.x_train, m),
                               x_test=forster_apply(ds.x_test, m), name=ds.name + " (Forster)")


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
    from ._checks import integer
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
           classes: tuple, binary: bool, do_standardize: bool, unit_norm: bool) -> Dataset:
    """Flatten, optionally standardize (training statistics), optionally unit-norm, make targets."""
    xtr, xte = flatten(x_tr), flatten(x_te)
    if do_standardize:
        xtr, xte = _standardize(xtr, xte)
    if unit_norm:
        xtr, xte = unit_norm_rows(xtr), unit_norm_rows(xte)
    if binary:
        ytr, yte = binary_targets(lab_tr, classes[0]), binary_targets(lab_te, classes[0])
    else:
        ytr, yte = one_hot(lab_tr, classes), one_hot(lab_te, classes)
    return Dataset(xtr, ytr, xte, yte, np.asarray(lab_tr, np.int64), np.asarray(lab_te, np.int64),
                   tuple(classes), name)


def _from_splits(name: str, x_tr: np.ndarray, lab_tr: np.ndarray, x_te: np.ndarray,
                 lab_te: np.ndarray, all_classes: Sequence[int], n_train: int | None,
                 n_test: int | None, classes: Sequence[int] | None, binary: bool | None,
                 seed: int | None, do_standardize: bool, unit_norm: bool) -> Dataset:
    classes, binary = _resolve_classes(classes, binary, all_classes)
    x_tr, lab_tr = select_classes(x_tr, lab_tr, classes)
    x_te, lab_te = select_classes(x_te, lab_te, classes)
    i_tr = _take(len(lab_tr), n_train, seed, f"{name} training set")
    i_te = _take(len(lab_te), n_test, None if seed is None else seed + 1, f"{name} test set")
    return _build(name, x_tr[i_tr], lab_tr[i_tr], x_te[i_te], lab_te[i_te], classes, binary,
                  do_standardize, unit_norm)


# ----------------------------------------------------------------------------- bundled / synthetic
def pca_whiten(x_fit: Any, *xs: Any, rtol: float = 1e-8) -> tuple[np.ndarray, ...]:
    """PCA-whiten arrays with the mean and covariance of `x_fit` (rows are points), keeping the
    components whose variance exceeds rtol times the largest; returns each of `xs` whitened.
    Fit on a pool larger than the training set: centring N points on their own mean leaves rank
    N - 1, which breaks K-FAC's first-layer condition."""
    fit = flatten(x_fit)
    mu = fit.mean(0)
    _, s, vt = np.linalg.svd(fit - mu, full_matrices=False)
    keep = s > rtol * s[0]
    proj = vt[keep].T / s[keep] * np.sqrt(len(fit))
    return tuple((flatten(x) - mu) @ proj for x in xs)


def digits(n_train: int = 100, n_test: int = 100, classes: Sequence[int] | None = (0, 1),
           binary: bool | None = True, seed: int = 0, standardize: bool = False,
           unit_norm: bool = True, whiten: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 digits (d = 64, pixels 0..16, about 180 points per class).

    The chosen classes (None: all ten) are shuffled with `seed`; the first n_train points train,
    the next n_test test. binary=True: +0.5 for classes[0], -0.5 for classes[1]; binary=False:
    one-hot over `classes`; None: binary iff two classes. Inputs are flattened, optionally
    standardized, then scaled to unit norm (the paper's preprocessing). whiten=True first
    PCA-whitens with the statistics of every image of `classes` outside the test split (labels
    unused; d becomes the number of non-degenerate components, about 50 for 0-vs-1): the raw 8 x 8
    digits have constant border pixels and an input Gram with condition number ~1e5.
    """
    from sklearn.datasets import load_digits  # lazy: sklearn is only needed here

    n_train, n_test = _count(n_train, "digits n_train"), _count(n_test, "digits n_test")
    raw = load_digits()
    classes, binary = _resolve_classes(classes, binary, range(10))
    x, lab = select_classes(raw.images, raw.target, classes)
    if n_train + n_test > len(lab):
        raise ValueError(f"digits: requested n_train={n_train} + n_test={n_test} points but the "
                         f"classes {classes} have only {len(lab)} points")
    perm = np.random.default_rng(seed).permutation(len(lab))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    x = flatten(x)
    if whiten:
        pool = np.setdiff1d(np.arange(len(lab)), te)
        x = pca_whiten(x[pool], x)[0]
    return _build(f"digits{classes}" + (" whitened" if whiten else ""), x[tr], lab[tr], x[te],
                  lab[te], classes, binary, standardize, unit_norm)


_TEACHERS = ("linear", "random")


def gaussian(n_train: int, n_test: int, dim: int, out_dim: int = 1, seed: int = 0,
             teacher: str = "linear", unit_norm: bool = False) -> Dataset:
    """Inputs with i.i.d. N(0, 1) entries (optionally scaled to unit-norm rows).

    teacher="linear": y = x W / sqrt(dim) with a fixed W ~ N(0, 1)^(dim x out_dim) drawn from
    `seed` (the same teacher for train and test; computed before any row normalization).
    teacher="random": every target entry is +0.5 or -0.5 independently with probability 1/2.
    labels: for out_dim == 1 the sign of the target (+1 / -1, classes (1, -1)); otherwise the
    argmax over outputs (classes 0..out_dim-1).
    """
    if teacher not in _TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}; expected one of {_TEACHERS}")
    _check_sizes(n_train, n_test, dim, out_dim)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim))
    if teacher == "linear":
        w = rng.standard_normal((dim, out_dim))
        y = x @ w / np.sqrt(dim)
    else:
        y = rng.choice(np.array([-0.5, 0.5]), size=(n_train + n_test, out_dim))
    if unit_norm:
        x = unit_norm_rows(x)
    if out_dim == 1:
        labels, classes = np.where(y[:, 0] > 0, 1, -1), (1, -1)
    else:
        labels, classes = np.argmax(y, axis=1), tuple(range(out_dim))
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   labels[:n_train].astype(np.int64), labels[n_train:].astype(np.int64),
                   classes, f"gaussian(dim={dim}, teacher={teacher})")


def sphere(n_train: int, n_test: int, dim: int, seed: int = 0) -> Dataset:
    """Points uniform on the unit sphere in R^dim with random +-0.5 targets (the paper's check).

    labels are +1 / -1 (classes (1, -1)), target = label / 2, drawn independently of the inputs.
    """
    _check_sizes(n_train, n_test, dim, 1)
    rng = np.random.default_rng(seed)
    x = unit_norm_rows(rng.standard_normal((n_train + n_test, dim)))
    labels = rng.choice(np.array([1, -1]), size=n_train + n_test).astype(np.int64)
    y = 0.5 * labels.astype(np.float64)[:, None]
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], labels[:n_train],
                   labels[n_train:], (1, -1), f"sphere(dim={dim})")


def _check_sizes(n_train: int, n_test: int, dim: int, out_dim: int) -> None:
    for value, what in ((n_train, "n_train"), (n_test, "n_test"), (dim, "dim"),
                        (out_dim, "out_dim")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{what} must be an integer, got {value!r}")
    if n_train < 1 or n_test < 0 or dim < 1 or out_dim < 1:
        raise ValueError(f"need n_train >= 1, n_test >= 0, dim >= 1 and out_dim >= 1, got "
                         f"n_train={n_train}, n_test={n_test}, dim={dim}, out_dim={out_dim}")


# ----------------------------------------------------------------------------- file readers
def _read_bytes(path: str) -> bytes:
    """File contents, transparently gunzipped when the file starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    return raw


_IDX_IMAGES, _IDX_LABELS = 2051, 2049


def _read_idx_images(path: str) -> np.ndarray:
    """IDX3 images: big-endian uint32 header (magic 2051, count, rows, cols) then uint8 pixels."""
    data = _read_bytes(path)
    if len(data) < 16:
        raise ValueError(f"{path}: IDX image file too short: {len(data)} bytes, expected a "
                         f"16-byte header (magic {_IDX_IMAGES}, count, rows, cols)")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != _IDX_IMAGES:
        raise ValueError(f"{path}: wrong magic number {magic} for an IDX image file, "
                         f"expected {_IDX_IMAGES}")
    expected = count * rows * cols
    if len(data) - 16 != expected:
        raise ValueError(f"{path}: payload has {len(data) - 16} bytes but the header "
                         f"(count {count} x {rows} x {cols}) expects {expected} bytes "
                         f"({'truncated' if len(data) - 16 < expected else 'trailing data'})")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def _read_idx_labels(path: str) -> np.ndarray:
    """IDX1 labels: big-endian uint32 header (magic 2049, count) then uint8 labels."""
    data = _read_bytes(path)
    if len(data) < 8:
        raise ValueError(f"{path}: IDX label file too short: {len(data)} bytes, expected an "
                         f"8-byte header (magic {_IDX_LABELS}, count)")
    magic, count = struct.unpack(">II", data[:8])
    if magic != _IDX_LABELS:
        raise ValueError(f"{path}: wrong magic number {magic} for an IDX label file, "
                         f"expected {_IDX_LABELS}")
    if len(data) - 8 != count:
        raise ValueError(f"{path}: payload has {len(data) - 8} bytes but the header "
                         f"(count {count}) expects {count} bytes "
                         f"({'truncated' if len(data) - 8 < count else 'trailing data'})")
    return _check_labels(np.frombuffer(data, dtype=np.uint8, offset=8), path)


def _pixels01(x: np.ndarray, source: str) -> np.ndarray:
    """Pixels scaled to [0, 1]: integer data, and float data with max > 1, are divided by 255."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{source}: images must be numeric, got dtype {x.dtype}")
    is_int = np.issubdtype(x.dtype, np.integer)
    x = _finite(x, source)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 255.0:
        raise ValueError(f"{source}: pixel values must lie in 0..255 (or already in [0, 1]), got "
                         f"range [{lo:g}, {hi:g}]")
    return x / 255.0 if (is_int or hi > 1.0) else x


def _load_npz_arrays(path: str) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path} (expected an .npz with keys {keys})")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            out = {k: f[k] for k in keys if k in files}
    except Exception as e:  # bad zip, pickled object arrays, not an npz at all
        raise ValueError(f"{path}: not a readable .npz archive of numeric arrays "
                         f"({type(e).__name__}: {e})") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected keys {keys}, "
                         f"found {sorted(files)}")
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if y.ndim == 2 and y.shape[1] == 1:
            y = out[f"y_{split}"] = y[:, 0]
        if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{path}: x_{split} must be (N, ...) and y_{split} (N,) integer "
                             f"labels, got shapes {x.shape} and {y.shape}")
    return out


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def _find(directory: str, base: str) -> str | None:
    """The IDX file `base`, gzipped or not (also the common 'train-images.idx3-ubyte' spelling)."""
    for stem in (base, base.replace("-idx", ".idx")):
        for name in (stem + ".gz", stem):
            p = os.path.join(directory, name)
            if os.path.isfile(p):
                return p
    return None


def _mnist_arrays(directory: str) -> tuple[dict[str, np.ndarray], str]:
    if os.path.isfile(directory) and directory.endswith(".npz"):
        return _load_npz_arrays(directory), directory
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory not found: {directory}")
    paths = {k: _find(directory, v) for k, v in _MNIST_FILES.items()}
    if all(paths.values()):
        x_tr, y_tr = _read_idx_images(paths["x_train"]), _read_idx_labels(paths["y_train"])
        x_te, y_te = _read_idx_images(paths["x_test"]), _read_idx_labels(paths["y_test"])
        for x, y, kx, ky in ((x_tr, y_tr, "x_train", "y_train"), (x_te, y_te, "x_test", "y_test")):
            if len(x) != len(y):
                raise ValueError(f"MNIST count mismatch: {paths[kx]} has {len(x)} images but "
                                 f"{paths[ky]} has {len(y)} labels")
        return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, directory
    npz = os.path.join(directory, "mnist.npz")
    if os.path.isfile(npz):
        return _load_npz_arrays(npz), npz
    missing = [v + "[.gz]" for k, v in _MNIST_FILES.items() if paths[k] is None]
    raise FileNotFoundError(f"MNIST files not found in {directory}: missing {missing}; expected the "
                            f"four IDX files (gzipped or not) or a Keras-layout mnist.npz")


def load_mnist(directory: str, n_train: int | None = 100, n_test: int | None = 100,
               classes: Sequence[int] | None = (0, 1), binary: bool | None = None,
               seed: int | None = None, standardize: bool = False,
               unit_norm: bool = True) -> Dataset:
    """MNIST from local files: the four IDX files (.gz or raw) or a Keras-layout mnist.npz.

    `directory` holds the files (or is the path of an .npz with keys x_train, y_train, x_test,
    y_test). Pixels are scaled to [0, 1], images flattened (d = 784), optionally standardized,
    rows scaled to unit norm. The first n_train / n_test points (None: all) of the chosen classes
    (None: all ten) are used, or a seeded random subset if `seed` is given. binary=None means
    binary (+0.5 for classes[0]) iff two classes, else one-hot.
    """
    arrs, src = _mnist_arrays(os.fspath(directory))
    y_tr = _check_labels(arrs["y_train"], f"{src} (y_train)")
    y_te = _check_labels(arrs["y_test"], f"{src} (y_test)")
    x_tr = _pixels01(arrs["x_train"], f"{src} (x_train)")
    x_te = _pixels01(arrs["x_test"], f"{src} (x_test)")
    return _from_splits("mnist", x_tr, y_tr, x_te, y_te, range(10), n_train, n_test, classes,
                        binary, seed, standardize, unit_norm)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed for dicts of numpy arrays."""

    _ALLOWED = {
        ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if module == "numpy":
            return getattr(np, name)
        import importlib
        try:
            mod = importlib.import_module(module.replace("numpy.core", "numpy._core"))
        except ImportError:  # numpy < 2
            mod = importlib.import_module(module.replace("numpy._core", "numpy.core"))
        return getattr(mod, name)


_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: pickled dict with b'data' (n, 3072) uint8 and b'labels' (n,)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path}") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})"
                         ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and b'labels', "
                         f"got {type(obj).__name__}")
    obj = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise ValueError(f"{path}: missing key(s) {[k for k in ('data', 'labels') if k not in obj]};"
                         f" expected a dict with b'data' (n, 3072) uint8 and b'labels'")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj["labels"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must have shape (n, 3072) (3 x 32 x 32 uint8 pixels), "
                         f"got {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: b'labels' must have {data.shape[0]} entries (one per image), "
                         f"got shape {labels.shape}")
    return data, _check_labels(labels, path)


def _cifar_dir(directory: str) -> str:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"CIFAR-10 directory not found: {directory}")
    inner = os.path.join(directory, "cifar-10-batches-py")
    if not os.path.isfile(os.path.join(directory, _CIFAR_TEST)) and os.path.isdir(inner):
        directory = inner
    missing = [n for n in _CIFAR_TRAIN + (_CIFAR_TEST,)
               if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files not found in {directory}: missing {missing}; "
                                f"expected the python batches data_batch_1..data_batch_5 and "
                                f"test_batch (cifar-10-batches-py)")
    return directory


def load_cifar10(directory: str, n_train: int | None = 100, n_test: int | None = 100,
                 classes: Sequence[int] | None = (0, 1), binary: bool | None = None,
                 seed: int | None = None, standardize: bool = False,
                 unit_norm: bool = True) -> Dataset:
    """CIFAR-10 from the local python batches (directory `cifar-10-batches-py` or its parent).

    Pixels scaled to [0, 1], flattened in the batch layout (d = 3072: 1024 R, 1024 G, 1024 B),
    optionally standardized, rows scaled to unit norm. Point selection and targets as in
    `load_mnist`. Batches are unpickled with a restricted unpickler (numpy arrays only).
    """
    root = _cifar_dir(os.fspath(directory))
    parts = [_read_cifar_batch(os.path.join(root, n)) for n in _CIFAR_TRAIN]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(os.path.join(root, _CIFAR_TEST))
    x_tr = _pixels01(x_tr, f"{root} (training batches)")
    x_te = _pixels01(x_te, f"{root} ({_CIFAR_TEST})")
    return _from_splits("cifar10", x_tr, y_tr, x_te, y_te, range(10), n_train, n_test, classes,
                        binary, seed, standardize, unit_norm)


def load_npz(path: str, n_train: int | None = None, n_test: int | None = None,
             classes: Sequence[int] | None = None, binary: bool | None = None,
             seed: int | None = None, standardize: bool = False, unit_norm: bool = True,
             scale: float | None = None) -> Dataset:
    """Generic .npz with keys x_train (N, ...), y_train (N,), x_test (N', ...), y_test (N',).

    y_* are non-negative integer class labels. Inputs are divided by `scale` if given (e.g. 255
    for uint8 images), flattened, optionally standardized and scaled to unit-norm rows.
    classes=None uses every label present in y_train (sorted); selection and targets as in
    `load_mnist` (all points by default).
    """
    path = os.fspath(path)
    arrs = _load_npz_arrays(path)
    labs = {k: _check_labels(arrs[k], f"{path} ({k})", n_classes=None)
            for k in ("y_train", "y_test")}
    xs = {k: _finite(arrs[k], f"{path} ({k})") for k in ("x_train", "x_test")}
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        xs = {k: v / scale for k, v in xs.items()}
    all_classes = tuple(sorted(set(labs["y_train"].tolist()) | set(labs["y_test"].tolist())))
    if classes is None:
        classes = tuple(sorted(set(labs["y_train"].tolist())))
    name = f"npz:{os.path.basename(path)}"
    return _from_splits(name, xs["x_train"], labs["y_train"], xs["x_test"], labs["y_test"],
                        all_classes, n_train, n_test, classes, binary, seed, standardize, unit_norm)


# ----------------------------------------------------------------------------- dispatcher
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits, "gaussian": gaussian, "sphere": sphere,
    "mnist": load_mnist, "cifar10": load_cifar10, "npz": load_npz,
}


def load(name: str, **kwargs: Any) -> Dataset:
    """Dispatch to a data set by name: digits, gaussian, sphere, mnist, cifar10 or npz."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key](**kwargs)
