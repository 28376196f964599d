"""Readers for data files the user already has (nothing is downloaded): MNIST (IDX, gzip or
not, or npz), CIFAR-10 python batches and generic npz, each giving a `Dataset` prepared as
`ntkngd.data` describes."""
from __future__ import annotations

import gzip
import importlib
import os
import pickle
import struct
from typing import Any, Sequence

import numpy as np

from .._checks import positive
from .dataset import (Dataset, _build, _check_labels, _disjoint, _from_splits, _resolve_classes,
                      finite, select_classes)


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


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file of uint8 entries: big-endian uint32 header (magic 2048 + ndim, then the sizes:
    count, and rows and cols for images) and the entries."""
    data = _read_bytes(path)
    kind, head, magic_expected = ("image" if ndim == 3 else "label"), 4 + 4 * ndim, 2048 + ndim
    if len(data) < head:
        raise ValueError(f"{path}: IDX {kind} file too short: {len(data)} bytes, expected a "
                         f"{head}-byte header (magic {magic_expected}, count"
                         f"{', rows, cols' if ndim == 3 else ''})")
    magic, *shape = struct.unpack(">" + "I" * (1 + ndim), data[:head])
    if magic != magic_expected:
        raise ValueError(f"{path}: wrong magic number {magic} for an IDX {kind} file, "
                         f"expected {magic_expected}")
    expected = int(np.prod(shape))
    if len(data) - head != expected:
        raise ValueError(f"{path}: payload has {len(data) - head} bytes but the header "
                         f"(count {' x '.join(map(str, shape))}) expects {expected} bytes "
                         f"({'truncated' if len(data) - head < expected else 'trailing data'})")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)


def _pixels01(x: np.ndarray, source: str) -> np.ndarray:
    """Pixels scaled to [0, 1]: integer data, and float data with max > 1, are divided by 255."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{source}: images must be numeric, got dtype {x.dtype}")
    is_int = np.issubdtype(x.dtype, np.integer)
    x = finite(x, source)
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


_MNIST_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
                "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _find(directory: str, base: str) -> str | None:
    """The IDX file `base`, gzipped or not (also the common 'train-images.idx3-ubyte' spelling)."""
    for stem in (base, base.replace("-idx", ".idx")):
        for name in (stem + ".gz", stem):
            p = os.path.join(directory, name)
            if os.path.isfile(p):
                return p
    return None


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_MNIST = os.path.join(_PACKAGE, "resources", "mnist")


def _mnist_arrays(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """The arrays found in `directory`: all four, or x_test and y_test alone when only the t10k
    test split is there."""
    if os.path.isfile(directory) and directory.endswith(".npz"):
        return _load_npz_arrays(directory), directory
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory not found: {directory}")
    paths = {k: _find(directory, v) for k, v in _MNIST_FILES.items()}
    splits = [s for s in ("train", "test") if paths[f"x_{s}"] and paths[f"y_{s}"]]
    if "test" in splits:
        out = {}
        for split in splits:
            kx, ky = f"x_{split}", f"y_{split}"
            out[kx], out[ky] = _read_idx(paths[kx], 3), _read_idx(paths[ky], 1)
            if len(out[kx]) != len(out[ky]):
                raise ValueError(f"MNIST count mismatch: {paths[kx]} has {len(out[kx])} images "
                                 f"but {paths[ky]} has {len(out[ky])} labels")
        return out, directory
    npz = os.path.join(directory, "mnist.npz")
    if os.path.isfile(npz):
        return _load_npz_arrays(npz), npz
    missing = [v + "[.gz]" for k, v in _MNIST_FILES.items() if paths[k] is None]
    raise FileNotFoundError(f"MNIST files not found in {directory}: missing {missing}; expected "
                            f"the four IDX files (gzipped or not), the two t10k test files, or a "
                            f"Keras-layout mnist.npz")


def load_mnist(directory: str | None = None, n_train: int | None = 100,
               n_test: int | None = 100, classes: Sequence[int] | None = (0, 1),
               binary: bool | None = None, seed: int | None = None,
               standardize: str = "global", unit_norm: bool = True) -> Dataset:
    """MNIST from the four IDX files (.gz or raw), the two t10k files alone or a Keras mnist.npz in
    `directory` (or that .npz's path); None: the bundled test split (ntkngd/resources/mnist,
    CC BY-SA 3.0, Y. LeCun, C. Cortes, C. Burges). Pixels in [0, 1], then `preprocess`ed (d = 784).
    The first n_train / n_test points (None: all) of `classes` (None: all ten) of each split, or
    a random subset with `seed`; from the test split alone, disjoint draws (`Dataset.source`).
    binary=None: binary (+0.5 for classes[0]) iff two classes, else one-hot."""
    arrs, src = _mnist_arrays(BUNDLED_MNIST if directory is None else os.fspath(directory))
    label = "bundled with ntkngd" if directory is None else src
    y_te = _check_labels(arrs["y_test"], f"{src} (y_test)")
    x_te = _pixels01(arrs["x_test"], f"{src} (x_test)")
    if "x_train" not in arrs:
        classes, binary = _resolve_classes(classes, binary, range(10))
        x, lab = select_classes(x_te, y_te, classes)
        tr, te = _disjoint(len(lab), n_train, n_test, seed, "mnist",
                           f"images of classes {classes} are in the test split")
        how = "file order" if seed is None else f"numpy default_rng({seed}).permutation"
        desc = (f"MNIST t10k test split ({label}): {len(lab)} images of classes {classes}, "
                f"{how}; the first {len(tr)} train, the next {len(te)} test (disjoint)")
        return _build("mnist", x[tr], lab[tr], x[te], lab[te], classes, binary, standardize,
                      unit_norm, source=desc)
    y_tr = _check_labels(arrs["y_train"], f"{src} (y_train)")
    x_tr = _pixels01(arrs["x_train"], f"{src} (x_train)")
    how = "file order" if seed is None else f"seeded permutations ({seed}, {seed + 1})"
    return _from_splits("mnist", x_tr, y_tr, x_te, y_te, range(10), n_train, n_test, classes,
                        binary, seed, standardize, unit_norm,
                        source=f"MNIST training and test splits ({label}), {how}")


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
        try:   # numpy >= 2 keeps its pickled globals in numpy._core, older ones in numpy.core
            mod = importlib.import_module(module.replace("numpy.core", "numpy._core"))
        except ImportError:
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
    missing = [k for k in ("data", "labels") if k not in obj]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected a dict with b'data' "
                         f"(n, 3072) uint8 and b'labels'")
    data, labels = np.asarray(obj["data"]), np.asarray(obj["labels"])
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
                 seed: int | None = None, standardize: str = "global",
                 unit_norm: bool = True) -> Dataset:
    """CIFAR-10 from the local python batches (directory `cifar-10-batches-py` or its parent).

    Pixels scaled to [0, 1], flattened in the batch layout (d = 3072: 1024 R, 1024 G, 1024 B),
    then `preprocess`ed; points and targets as in `load_mnist`. Batches are unpickled with a
    restricted unpickler (numpy arrays only)."""
    root = _cifar_dir(os.fspath(directory))
    parts = [_read_cifar_batch(os.path.join(root, n)) for n in _CIFAR_TRAIN]
    x_tr, y_tr = (np.concatenate(arrays) for arrays in zip(*parts))
    x_te, y_te = _read_cifar_batch(os.path.join(root, _CIFAR_TEST))
    x_tr = _pixels01(x_tr, f"{root} (training batches)")
    x_te = _pixels01(x_te, f"{root} ({_CIFAR_TEST})")
    return _from_splits("cifar10", x_tr, y_tr, x_te, y_te, range(10), n_train, n_test, classes,
                        binary, seed, standardize, unit_norm)


def load_npz(path: str, n_train: int | None = None, n_test: int | None = None,
             classes: Sequence[int] | None = None, binary: bool | None = None,
             seed: int | None = None, standardize: str = "global", unit_norm: bool = True,
             scale: float | None = None) -> Dataset:
    """Generic .npz with keys x_train (N, ...), y_train (N,), x_test (N', ...), y_test (N',).

    y_* are non-negative integer class labels. Inputs are divided by `scale` if given (e.g. 255
    for uint8 images), then `preprocess`ed. classes=None uses every label of y_train (sorted);
    points and targets as in `load_mnist` (all points by default)."""
    path = os.fspath(path)
    arrs = _load_npz_arrays(path)
    labs = {k: _check_labels(arrs[k], f"{path} ({k})", n_classes=None)
            for k in ("y_train", "y_test")}
    xs = {k: finite(arrs[k], f"{path} ({k})") for k in ("x_train", "x_test")}
    if scale is not None:
        scale = positive(scale, "scale")
        xs = {k: v / scale for k, v in xs.items()}
    all_classes = tuple(sorted(set(labs["y_train"].tolist()) | set(labs["y_test"].tolist())))
    if classes is None:
        classes = tuple(sorted(set(labs["y_train"].tolist())))
    name = f"npz:{os.path.basename(path)}"
    return _from_splits(name, xs["x_train"], labs["y_train"], xs["x_test"], labs["y_test"],
                        all_classes, n_train, n_test, classes, binary, seed, standardize, unit_norm)
