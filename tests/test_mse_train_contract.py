"""ng.train with MSE: unknown keywords are errors, and accuracy follows the targets' class coding."""
import jax
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points
from ntkngd.training.observers import accuracy
from ntkngd.losses import class_encoding


@pytest.fixture(scope="module")
def setup():
    net = ng.mlp(2, 32)
    x, xt = sphere_points(8, 5, seed=0), sphere_points(4, 5, seed=1)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    return net, params, x, xt


@pytest.mark.parametrize("kw", [{"dampnig": 1e-2}, {"step": 1}, {"learning_rate": 0.1}])
def test_mse_train_rejects_unknown_keywords(kw, setup):
    net, params, x, xt = setup
    y, yt = np.ones((8, 1)) * 0.5, np.ones((4, 1)) * 0.5
    name = next(iter(kw))
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        ng.train("exact", net, params, (x, y, xt, yt), steps=1, **kw)


def test_mse_train_rejects_cross_entropy_options(setup):
    net, params, x, xt = setup
    y, yt = np.ones((8, 1)) * 0.5, np.ones((4, 1)) * 0.5
    with pytest.raises(TypeError, match="lr_fraction= applies only to losses other than MSE"):
        ng.train("exact", net, params, (x, y, xt, yt), steps=1, lr_fraction=0.3)


def test_accuracy_from_the_target_coding():
    f = np.array([[0.9], [0.4], [0.6], [0.1]])
    # 0/1 targets: threshold 0.5 (sign agreement would give 0.5: every output is positive)
    assert accuracy(f, np.array([[1.0], [0.0], [1.0], [0.0]])) == 1.0
    assert class_encoding(np.array([[1.0], [0.0]])) == ("threshold", 0.5)
    # +-1 and +-0.5: sign
    assert accuracy(f - 0.5, np.array([[1.0], [-1.0], [1.0], [-1.0]])) == 1.0
    assert class_encoding(np.array([[0.5], [-0.5]])) == ("threshold", 0.0)
    # one-hot: argmax
    f3 = np.array([[0.2, 0.9, 0.1], [0.5, 0.1, 0.0]])
    assert accuracy(f3, np.eye(3)[[1, 2]]) == 0.5
    # a single class present: 1 stands for {0, 1}, -0.5 for {-0.5, 0.5}
    assert class_encoding(np.ones((3, 1))) == ("threshold", 0.5)
    assert class_encoding(-0.5 * np.ones((3, 1))) == ("threshold", 0.0)


def test_accuracy_refuses_targets_without_classes():
    with pytest.raises(ValueError, match="class-coded targets.*3 distinct target values"):
        accuracy(np.zeros((3, 1)), np.array([[0.1], [0.7], [-2.0]]))
    with pytest.raises(ValueError, match="one largest entry"):
        accuracy(np.zeros((2, 2)), np.array([[0.5, 0.5], [0.5, -0.5]]))
    with pytest.raises(ValueError, match="class-coded"):
        ng.get_loss("mse").accuracy(np.zeros((3, 1)), np.array([[0.1], [0.7], [-2.0]]))


def test_train_accuracy_on_zero_one_targets_is_one_when_fitted(setup):
    """Exact NGD fits 0/1 targets in a few steps; the logged train accuracy must then be 1, not the
    fraction of class 1 (3/8: what sign agreement gave)."""
    net, params, x, xt = setup
    y = np.array([1.0, 0, 0, 1, 0, 1, 0, 0])[:, None]
    yt = np.array([1.0, 0, 1, 0])[:, None]
    log = ng.train("exact", net, params, (x, y, xt, yt), steps=4)
    assert log.train_loss[-1] < 1e-8
    assert log.train_acc[-1] == 1.0


def test_train_accuracy_is_nan_for_regression_targets(setup):
    net, params, x, xt = setup
    rng = np.random.default_rng(0)
    log = ng.train("exact", net, params, (x, rng.normal(size=(8, 1)), xt,
                                         rng.normal(size=(4, 1))), steps=1)
    assert np.all(np.isnan(log.train_acc)) and np.all(np.isfinite(log.train_loss))
