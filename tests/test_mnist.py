"""MNIST from the t10k test split alone (bundled with ntkngd, CC BY-SA 3.0, Y. LeCun, C. Cortes,
C. Burges): disjoint training and test draws, gzipped or raw files, recorded source."""
import gzip
import hashlib
import os
import shutil

import numpy as np
import pytest

from ntkngd import data
from ntkngd.data.loaders import BUNDLED_MNIST

MD5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
       "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def test_bundled_files_are_the_original_test_split():
    for name, md5 in MD5.items():
        with open(os.path.join(BUNDLED_MNIST, name), "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5
    assert "CC BY-SA 3.0" in open(os.path.join(BUNDLED_MNIST, "README.md")).read()


def test_bundled_draw_is_disjoint_seeded_and_recorded():
    ds = data.load_mnist(n_train=30, n_test=20, seed=0)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.out_dim) == (30, 20, 784, 1)
    assert set(ds.labels_train) | set(ds.labels_test) == {0, 1}
    np.testing.assert_array_equal(ds.y_train[:, 0], np.where(ds.labels_train == 0, 0.5, -0.5))
    # disjoint: no test image equals a training image (MNIST 0/1 images are pairwise distinct)
    dist = np.linalg.norm(ds.x_train[:, None] - ds.x_test[None], axis=2)
    assert dist.min() > 0.1
    np.testing.assert_allclose(np.linalg.norm(ds.x_train, axis=1), 1.0, rtol=0, atol=1e-14)
    assert "t10k" in ds.source and "default_rng(0)" in ds.source and "disjoint" in ds.source
    # the 2115 zeros and ones of t10k: the same draw again, a different one for another seed
    np.testing.assert_array_equal(data.load_mnist(n_train=30, n_test=20, seed=0).x_test,
                                  ds.x_test)
    other = data.load_mnist(n_train=30, n_test=20, seed=1)
    assert not np.array_equal(other.labels_train, ds.labels_train) or \
        not np.allclose(other.x_train, ds.x_train)
    with pytest.raises(ValueError, match=r"n_train=2000 \+ n_test=200 .* only 2115 images"):
        data.load_mnist(n_train=2000, n_test=200)


@pytest.mark.parametrize("gz", [True, False])
def test_directory_with_only_the_test_split(tmp_path, gz):
    for name in MD5:
        src = os.path.join(BUNDLED_MNIST, name)
        if gz:
            shutil.copy(src, tmp_path / name)
        else:
            with gzip.open(src, "rb") as f, open(tmp_path / name[:-3], "wb") as g:
                g.write(f.read())
    a = data.load_mnist(tmp_path, n_train=12, n_test=8, classes=(3, 8, 5), seed=2)
    b = data.load_mnist(None, n_train=12, n_test=8, classes=(3, 8, 5), seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.out_dim == 3 and str(tmp_path) in a.source
    # file order without a seed: the first images of the classes train, the next ones test
    first = data.load_mnist(tmp_path, n_train=5, n_test=5, classes=(7,), binary=False)
    assert "file order" in first.source and first.n_train == 5


def test_cli_train_uses_the_bundled_split(capsys):
    from ntkngd import cli
    args = cli.parser().parse_args(["train", "--data", "mnist", "--n-train", "10",
                                    "--n-test", "5", "--seed", "3"])
    ds = cli._dataset(args, "exact")
    assert ds.input_dim == 784 and "default_rng(3)" in ds.source
