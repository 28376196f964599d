"""Tests for ntkngd.data: preprocessing, bundled/synthetic sets, and loaders on files written here."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkngd.data import (
    Dataset, binary_targets, digits, flatten, forster_transform, gaussian, global_standardize,
    isotropy_error, load, preprocess,
    load_cifar10, load_mnist, load_npz, one_hot, select_classes, sphere, standardize,
    unit_norm_rows,
)


# ----------------------------------------------------------------------------- file writers
def write_idx_images(path, images, magic=2051, count=None, truncate=0, gz=True):
    images = np.asarray(images, dtype=np.uint8)
    n, r, c = images.shape
    raw = struct.pack(">IIII", magic, n if count is None else count, r, c) + images.tobytes()
    raw = raw[:len(raw) - truncate]
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(raw)


def write_idx_labels(path, labels, magic=2049, gz=True):
    labels = np.asarray(labels, dtype=np.uint8)
    raw = struct.pack(">II", magic, len(labels)) + labels.tobytes()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(raw)


def fake_images(rng, n, shape=(28, 28)):
    return rng.integers(1, 256, size=(n,) + shape).astype(np.uint8)  # no all-zero image


def write_mnist(directory, n_train=30, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    tr_x, te_x = fake_images(rng, n_train), fake_images(rng, n_test)
    tr_y, te_y = np.arange(n_train) % 10, np.arange(n_test) % 10
    write_idx_images(directory / f"train-images-idx3-ubyte{sfx}", tr_x, gz=gz)
    write_idx_labels(directory / f"train-labels-idx1-ubyte{sfx}", tr_y, gz=gz)
    write_idx_images(directory / f"t10k-images-idx3-ubyte{sfx}", te_x, gz=gz)
    write_idx_labels(directory / f"t10k-labels-idx1-ubyte{sfx}", te_y, gz=gz)
    return tr_x, tr_y, te_x, te_y


def write_cifar(directory, n_per_batch=6, seed=0, protocol=2):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(1, 256, size=(n_per_batch, 3072)).astype(np.uint8)
        labels = [(i + j) % 10 for j in range(n_per_batch)]
        with open(directory / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f,
                        protocol=protocol)
        batches[name] = (data, np.array(labels))
    return batches


# ----------------------------------------------------------------------------- preprocessing
def test_flatten_and_unit_norm_rows():
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) + 1
    f = flatten(x)
    assert f.shape == (2, 12) and f.dtype == np.float64
    np.testing.assert_array_equal(f[1], np.arange(12, 24) + 1)
    u = unit_norm_rows(np.array([[3.0, 4.0], [0.0, -2.0]]))
    np.testing.assert_allclose(u, [[0.6, 0.8], [0.0, -1.0]], rtol=0, atol=1e-15)


def test_unit_norm_rows_zero_row_raises():
    with pytest.raises(ValueError, match=r"zero row.*index\(es\) \[1\]"):
        unit_norm_rows(np.array([[1.0, 2.0], [0.0, 0.0]]))


def test_standardize_constant_feature_centred_not_divided():
    xtr = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]])
    xte = np.array([[3.0, 7.0, 8.0]])
    a, b = standardize(xtr, xte)
    std1 = np.sqrt(8.0 / 3.0)
    np.testing.assert_allclose(a[:, 0], [-2 / std1, 0.0, 2 / std1], rtol=1e-14)
    np.testing.assert_array_equal(a[:, 1], [0.0, 0.0, 0.0])  # constant feature: centred only
    np.testing.assert_allclose(b, [[0.0, 2.0, 6 / std1]], rtol=1e-14)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    np.testing.assert_allclose(a.mean(axis=0), 0.0, atol=1e-15)


def test_default_preprocessing_is_global_standardization_then_unit_norm():
    # one scalar mean 3 and std sqrt(5) of the whole training array (not per feature)
    xtr = np.array([[0.0, 2.0], [4.0, 6.0]])
    xte = np.array([[3.0, 4.0]])
    a, b, how = preprocess(xtr, xte)
    z = np.array([[-3.0, -1.0], [1.0, 3.0]]) / np.sqrt(5.0)
    np.testing.assert_allclose(a, z / np.linalg.norm(z, axis=1, keepdims=True), rtol=0, atol=1e-15)
    np.testing.assert_allclose(a, [[-3 / np.sqrt(10), -1 / np.sqrt(10)],
                                   [1 / np.sqrt(10), 3 / np.sqrt(10)]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b, [[0.0, 1.0]], rtol=0, atol=1e-15)  # test uses training scalars
    assert how == "global standardization (one mean and std of the training array) + unit-norm rows"
    g, gt = global_standardize(xtr, xte)
    np.testing.assert_allclose(g, z, rtol=0, atol=1e-15)
    np.testing.assert_allclose(gt, [[0.0, 1 / np.sqrt(5.0)]], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"standardize must be one of"):
        preprocess(xtr, xte, standardize=True)


def test_every_loader_defaults_to_the_authors_preprocessing(tmp_path):
    from sklearn.datasets import load_digits
    raw = load_digits()
    ds = digits(n_train=30, n_test=20, classes=(0, 1), seed=5)
    x, lab = select_classes(raw.images, raw.target, (0, 1))
    perm = np.random.default_rng(5).permutation(len(lab))
    xtr, xte = flatten(x[perm[:30]]), flatten(x[perm[30:50]])
    m, s = xtr.mean(), xtr.std()
    np.testing.assert_allclose(ds.x_train, unit_norm_rows((xtr - m) / s), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ds.x_test, unit_norm_rows((xte - m) / s), rtol=0, atol=1e-14)
    g = gaussian(20, 5, dim=4, seed=1)
    x = np.random.default_rng(1).standard_normal((25, 4))
    np.testing.assert_allclose(g.x_train, unit_norm_rows((x[:20] - x[:20].mean()) / x[:20].std()),
                               rtol=0, atol=1e-14)
    images, labels = write_mnist(tmp_path, gz=False)[:2]
    mn = load_mnist(tmp_path, n_train=5, n_test=4, classes=(0, 1))
    sel = images[np.isin(labels, (0, 1))][:5].reshape(5, -1) / 255.0
    np.testing.assert_allclose(mn.x_train, unit_norm_rows((sel - sel.mean()) / sel.std()),
                               rtol=0, atol=1e-14)
    for d in (ds, g, mn):
        assert d.preprocessing.startswith("global standardization")


def test_select_binary_one_hot():
    x = np.arange(12.0).reshape(6, 2)
    lab = np.array([3, 1, 7, 3, 1, 9])
    xs, ls = select_classes(x, lab, (3, 1))
    np.testing.assert_array_equal(ls, [3, 1, 3, 1])
    np.testing.assert_array_equal(xs[:, 0], [0.0, 2.0, 6.0, 8.0])
    np.testing.assert_array_equal(binary_targets(ls, 3)[:, 0], [0.5, -0.5, 0.5, -0.5])
    assert binary_targets(ls, 3).shape == (4, 1)
    oh = one_hot(ls, (3, 1))
    np.testing.assert_array_equal(oh, [[1, 0], [0, 1], [1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"labels \[7, 9\] are not among the classes"):
        one_hot(lab, (3, 1))


# ----------------------------------------------------------------------------- forster
def test_forster_isotropic_position():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)) @ np.diag([1.0, 2.0, 5.0, 0.1, 1.0, 3.0]) + 0.5
    assert isotropy_error(unit_norm_rows(x)) > 0.1
    z = forster_transform(x)
    n, d = z.shape
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=0, atol=1e-12)
    gram = z.T @ z
    assert np.linalg.norm(gram - n / d * np.eye(d)) / np.linalg.norm(n / d * np.eye(d)) < 1e-8
    assert isotropy_error(z) < 1e-8


def test_forster_errors_and_warning():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"N >= d.*N=3 < d=5"):
        forster_transform(rng.standard_normal((3, 5)))
    x = rng.standard_normal((8, 3))
    x[:, 2] = x[:, 0] + x[:, 1]  # rank 2: X^T X singular
    with pytest.raises(ValueError, match=r"degenerate data: X\^T X is singular"):
        forster_transform(x)
    # 5 of 7 points on one line (> N/d = 7/3): no radial isotropic position exists (the other
    # two alone span the remaining 2 directions)
    bad = np.vstack([np.tile([1.0, 0.0, 0.0], (5, 1)), rng.standard_normal((2, 3))])
    with pytest.raises(ValueError, match=r"no isotropic position in R\^3: rows \[5, 6\] alone "
                                         r"span 2 direction"):
        forster_transform(bad, iters=50)


def test_forster_slow_convergence_is_reported_not_hidden():
    """Four Gaussian points in the plane (seed 230) whose iteration converges sublinearly: 5000
    iterations stop at an isotropy error of 7e-8 with a warning; 50000 reach the tolerance."""
    x = np.random.default_rng(230).standard_normal((4, 2))
    with pytest.warns(UserWarning, match=r"did not converge in 5000 iterations"):
        z = forster_transform(x)
    assert 1e-10 < isotropy_error(z) < 1e-6
    assert isotropy_error(forster_transform(x, iters=50000)) < 1e-10


# derandomized: CI sees the same 20 cases every run (rare configurations like the one above
# converge too slowly for the default budget and are tested on their own)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(d=st.integers(1, 6), extra=st.integers(2, 20), seed=st.integers(0, 2**31 - 1))
def test_forster_property(d, extra, seed):
    n = d + extra
    x = np.random.default_rng(seed).standard_normal((n, d))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # must converge on Gaussian data
        z = forster_transform(x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=0, atol=1e-12)
    assert isotropy_error(z) < 1e-8
    np.testing.assert_allclose(z.T @ z, n / d * np.eye(d), rtol=0, atol=1e-8 * n / d)


# ----------------------------------------------------------------------------- digits & synthetic
def test_digits_binary_shapes_targets_norms():
    ds = digits(n_train=100, n_test=50, classes=(3, 8), seed=0)
    assert isinstance(ds, Dataset)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.out_dim) == (100, 50, 64, 1)
    assert ds.x_train.dtype == np.float64 and ds.classes == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(ds.x_train, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(ds.x_test, axis=1), 1.0, rtol=1e-14)
    assert set(np.unique(ds.y_train[:, 0])) == {-0.5, 0.5}
    np.testing.assert_array_equal(ds.y_train[:, 0] == 0.5, ds.labels_train == 3)
    assert set(np.unique(ds.labels_test)) <= {3, 8}
    assert "global standardization" in ds.preprocessing and "unit-norm" in ds.preprocessing
    # train and test are disjoint pieces of one shuffle: no shared image
    assert not (ds.x_train[:, None, :] == ds.x_test[None, :, :]).all(-1).any()


def test_digits_deterministic_per_seed():
    a, b, c = digits(seed=3), digits(seed=3), digits(seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.labels_test, b.labels_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_digits_one_hot_and_standardize_and_errors():
    ds = digits(n_train=60, n_test=30, classes=(0, 1, 2), binary=False, seed=1)
    assert ds.y_train.shape == (60, 3)
    np.testing.assert_array_equal(ds.y_train.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.argmax(ds.y_train, axis=1),
                                  [(0, 1, 2).index(l) for l in ds.labels_train])
    st_ = digits(n_train=60, n_test=30, standardize="feature", unit_norm=False)
    col_std = st_.x_train.std(axis=0)
    assert np.all((np.abs(col_std - 1) < 1e-12) | (col_std == 0))
    assert np.sum(col_std == 0) >= 1  # border pixels of 0/1 digits are constant
    with pytest.raises(ValueError, match=r"only 360 points"):
        digits(n_train=300, n_test=100)
    with pytest.raises(ValueError, match=r"exactly 2 classes"):
        digits(classes=(0, 1, 2), binary=True)


def test_sphere_and_gaussian():
    sp = sphere(50, 20, dim=7, seed=2)
    np.testing.assert_allclose(np.linalg.norm(sp.x_train, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(sp.x_test, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(sp.y_train[:, 0], 0.5 * sp.labels_train)
    assert set(np.unique(sp.y_train)) == {-0.5, 0.5} and sp.input_dim == 7

    g = gaussian(40, 10, dim=5, out_dim=2, seed=0)
    assert (g.x_train.shape, g.y_train.shape, g.y_test.shape) == ((40, 5), (40, 2), (10, 2))
    # the teacher is linear and shared by train and test: solve it from train, predict test
    w, *_ = np.linalg.lstsq(g.x_train, g.y_train, rcond=None)
    np.testing.assert_allclose(g.x_test @ w, g.y_test, atol=1e-10)
    r = gaussian(30, 5, dim=4, teacher="random", seed=0)
    assert set(np.unique(r.y_train)) == {-0.5, 0.5}
    np.testing.assert_array_equal(r.labels_train, np.where(r.y_train[:, 0] > 0, 1, -1))
    with pytest.raises(ValueError, match=r"unknown teacher 'cubic'"):
        gaussian(3, 3, 2, teacher="cubic")


# ----------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_idx(tmp_path, gz):
    tr_x, tr_y, te_x, te_y = write_mnist(tmp_path, gz=gz)
    ds = load_mnist(tmp_path, n_train=5, n_test=4, classes=(0, 1), standardize="none")
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.out_dim) == (5, 4, 784, 1)
    # first points of the chosen classes, in file order
    idx = np.flatnonzero(np.isin(tr_y, (0, 1)))[:5]
    np.testing.assert_array_equal(ds.labels_train, tr_y[idx])
    expect = tr_x[idx].reshape(5, -1) / 255.0
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(ds.x_train, expect, rtol=1e-13)
    np.testing.assert_array_equal(ds.y_train[:, 0], np.where(tr_y[idx] == 0, 0.5, -0.5))
    allc = load_mnist(tmp_path, n_train=None, n_test=None, classes=None)
    assert allc.y_train.shape == (30, 10) and allc.n_test == 20
    shuf = load_mnist(tmp_path, n_train=5, n_test=4, seed=0)
    assert set(shuf.labels_train) <= {0, 1}


def test_load_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, x_te = fake_images(rng, 12), fake_images(rng, 8)
    y_tr, y_te = np.arange(12) % 3, np.arange(8) % 3
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    ds = load_mnist(tmp_path, n_train=4, n_test=3, classes=(0, 1, 2), standardize="none")
    assert ds.y_train.shape == (4, 3) and ds.input_dim == 784
    exp = x_tr[0].reshape(-1) / 255.0
    np.testing.assert_allclose(ds.x_train[0], exp / np.linalg.norm(exp), rtol=1e-13)
    same = load_mnist(tmp_path / "mnist.npz", n_train=4, n_test=3, classes=(0, 1, 2),
                      standardize="none")
    np.testing.assert_array_equal(same.x_train, ds.x_train)


def test_mnist_truncated(tmp_path):
    write_mnist(tmp_path)
    write_idx_images(tmp_path / "train-images-idx3-ubyte.gz", fake_images(np.random.default_rng(0), 30),
                     truncate=100)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: payload has 23420 bytes .*"
                                         r"expects 23520 bytes \(truncated\)"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", fake_images(np.random.default_rng(0), 20),
                     magic=2049)
    with pytest.raises(ValueError, match=r"t10k-images.*wrong magic number 2049.*expected 2051"):
        load_mnist(tmp_path)
    write_mnist(tmp_path)
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(30), magic=2051)
    with pytest.raises(ValueError, match=r"wrong magic number 2051 for an IDX label file, expected 2049"):
        load_mnist(tmp_path)


def test_mnist_bad_label(tmp_path):
    write_mnist(tmp_path)
    labels = np.arange(30) % 10
    labels[7] = 11
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match=r"1 label\(s\) outside 0\.\.9 \(first at index 7: 11\)"):
        load_mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(19) % 10)
    with pytest.raises(ValueError, match=r"count mismatch: .*t10k-images.* has 20 images but .*"
                                         r"t10k-labels.* has 19 labels"):
        load_mnist(tmp_path)


def test_mnist_missing_files(tmp_path):
    write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"missing \['t10k-labels-idx1-ubyte\[\.gz\]'\]"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MNIST directory not found"):
        load_mnist(tmp_path / "nope")


def test_mnist_not_enough_points(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"training set: requested 100 points but only 6"):
        load_mnist(tmp_path)  # 30 training points, 6 of classes 0/1


# ----------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("nested,protocol", [(False, 2), (True, 5)])
def test_load_cifar10(tmp_path, nested, protocol):
    root = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    batches = write_cifar(root, protocol=protocol)
    ds = load_cifar10(tmp_path if nested else root, n_train=None, n_test=None, classes=(0, 1),
                      standardize="none")
    all_tr = np.concatenate([np.asarray(batches[f"data_batch_{k}"][1]) for k in range(1, 6)])
    assert ds.n_train == int(np.isin(all_tr, (0, 1)).sum()) == 3 and ds.input_dim == 3072
    assert ds.n_test == 1 and ds.labels_test.tolist() == [0]  # test batch labels 5..9, 0
    first = batches["data_batch_1"][0][0] / 255.0  # batch 1 labels start at 0
    np.testing.assert_allclose(ds.x_train[0], first / np.linalg.norm(first), rtol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(ds.x_test, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(ds.labels_train, [0, 1, 1])
    np.testing.assert_array_equal(ds.y_train[:, 0], [0.5, -0.5, -0.5])


def test_cifar_wrong_shape_label_missing(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((6, 1024), np.uint8), b"labels": [0] * 6}, f)
    with pytest.raises(ValueError, match=r"data_batch_3: b'data' must have shape \(n, 3072\).*"
                                         r"got \(6, 1024\)"):
        load_cifar10(tmp_path)
    write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.ones((2, 3072), np.uint8), b"labels": [1, 10]}, f)
    with pytest.raises(ValueError, match=r"test_batch: 1 label\(s\) outside 0\.\.9"):
        load_cifar10(tmp_path)
    os.remove(tmp_path / "data_batch_5")
    with pytest.raises(FileNotFoundError, match=r"missing \['data_batch_5'\]"):
        load_cifar10(tmp_path)


def test_cifar_refuses_arbitrary_pickle(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": os.getcwd}, f)
    with pytest.raises(ValueError, match=r"refusing to load global"):
        load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- npz & dispatcher
def test_load_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.standard_normal((10, 2, 3)), y_train=np.arange(10) % 2,
             x_test=rng.standard_normal((4, 2, 3)), y_test=np.arange(4) % 2)
    ds = load_npz(path)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.out_dim, ds.classes) == (10, 4, 6, 1, (0, 1))
    np.testing.assert_allclose(np.linalg.norm(ds.x_train, axis=1), 1.0, rtol=1e-14)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.ones((2, 2)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['x_test', 'y_test'\]"):
        load_npz(bad)
    with pytest.raises(FileNotFoundError, match=r"file not found: .*nope\.npz"):
        load_npz(tmp_path / "nope.npz")


def test_load_dispatcher(tmp_path):
    ds = load("digits", n_train=10, n_test=10)
    assert ds.n_train == 10 and ds.input_dim == 64
    assert load("sphere", n_train=3, n_test=2, dim=4).input_dim == 4
    write_cifar(tmp_path / "c")
    assert load("CIFAR-10", directory=tmp_path / "c", n_train=2, n_test=1).input_dim == 3072
    with pytest.raises(ValueError, match=r"unknown data set 'imagenet'; expected one of "
                                         r"\['cifar10', 'digits', 'gaussian', 'mnist', 'npz', "
                                         r"'sphere'\]"):
        load("imagenet")


# ----------------------------------------------------------------------------- issue 19: bad input
def test_bad_input_is_a_clear_error_not_a_silent_answer():
    """Inputs that used to give NaN, a truncated span, a constant answer or a misleading error."""
    from ntkngd.data import forster_fit, pca_whiten, span_isotropy_error
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3))
    with pytest.raises(ValueError, match=r"N >= 1"):                       # was NaN statistics
        global_standardize(np.zeros((0, 3)), x)
    with pytest.raises(ValueError, match=r"N >= 1"):
        standardize(np.zeros((0, 3)), x)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x_train contains 1 NaN"):       # was NaN passed on
        preprocess(bad, x, standardize="none", unit_norm=False)
    with pytest.raises(ValueError, match=r"rank must be at most min\(N, d\) = 3, got 7"):
        span_isotropy_error(x, rank=7)                                      # was r = 7 reported
    with pytest.raises(ValueError, match=r"rank must be a positive integer, got 0"):
        span_isotropy_error(x, rank=0)                                      # was the numerical rank
    with pytest.raises(ValueError, match=r"tol must be a positive finite number, got nan"):
        forster_fit(x, tol=float("nan"))                                    # was every iteration
    with pytest.raises(ValueError, match=r"iters must be an integer, got 2.5"):
        forster_fit(x, iters=2.5)
    with pytest.raises(ValueError, match=r"non-empty 2-D"):                 # was ZeroDivisionError
        isotropy_error(np.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"no variance to whiten"):         # was (N', 0) arrays
        pca_whiten(np.ones((4, 3)), x)
    with pytest.raises(ValueError, match=r"x_fit contains 1 NaN"):
        pca_whiten(bad, x)
    with pytest.raises(ValueError, match=r"labels contain NaN"):            # was -0.5 targets
        binary_targets(np.array([0.0, 1.0, np.nan]), 1)
    empty_test = gaussian(6, 0, 3, seed=1)                                  # n_test = 0 is allowed
    assert empty_test.n_test == 0 and empty_test.x_test.shape == (0, 3)
    np.testing.assert_allclose(np.linalg.norm(empty_test.x_train, axis=1), 1.0, rtol=1e-15)
