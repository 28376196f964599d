"""Bad input gets a clear error or the right value, never a silent wrong answer: overflowing
inputs, complex inputs, widths of any integer type, batch sizes, abrelu's gamma, data counts."""
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points


def test_inputs_whose_kernels_overflow_are_refused():
    x = sphere_points(5, 3)
    net = ng.mlp(3, 16)
    # ReLU kernels are 2-homogeneous: at norm 1e70 still finite, and the operator is unchanged
    big = ng.operator("exact", ng.analytic_kernels(net, 1e70 * x))
    assert big.alpha == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match=r"kernels overflowed: .* row norms up to 1e\+78"):
        ng.analytic_kernels(net, 1e78 * x)
    with pytest.raises(ValueError, match="kernels overflowed"):
        ng.analytic_kernels(ng.mlp(3, 16, "erf"), 1e70 * x)
    with pytest.raises(ValueError, match=r"kernels overflowed: .*x_train"):
        ng.analytic_kernels(net, x, 1e200 * x[:2])
    import jax
    params = net.init_fn(jax.random.PRNGKey(0), (-1, 3))[1]
    with pytest.raises(ValueError, match=r"x_train has row norms from 1e\+160 .* rescale"):
        ng.empirical_kernels(net, params, 1e160 * x)


def test_complex_inputs_are_refused_not_cast():
    x = sphere_points(4, 3)
    with pytest.raises(TypeError, match="x_train must be real, got complex dtype complex128"):
        ng.analytic_kernels(ng.mlp(2, 8), x + 0j)
    with pytest.raises(TypeError, match="x_test must be real"):
        ng.analytic_kernels(ng.mlp(2, 8), x, x.astype(np.complex64))


@pytest.mark.parametrize("width", [64, np.int64(64), 64.0, np.float32(64), "jnp.int32",
                                   [64, np.int32(64)], np.array([64, 64]), "jnp.array"])
def test_widths_of_any_integer_type(width):
    import jax.numpy as jnp
    if isinstance(width, str):
        width = jnp.int32(64) if width == "jnp.int32" else jnp.array([64, 64])
    assert ng.mlp(3, width).widths == (64, 64)


def test_widths_from_arange_and_bad_widths():
    assert ng.mlp(4, np.arange(16, 19)).widths == (16, 17, 18)
    for bad, err, msg in [(64.5, ValueError, "width must be an integer, got 64.5"),
                          (True, TypeError, "width must be an integer, got True"),
                          ("64", TypeError, "width must be an integer, got '64'"),
                          (0, ValueError, "width must be a positive integer, got 0"),
                          (float("nan"), ValueError, "width must be an integer, got nan")]:
        with pytest.raises(err, match=msg):
            ng.mlp(3, bad)


def test_abrelu_gamma_counts_the_half_lines_where_phi_moves():
    assert ng.mlp(3, 8, "abrelu", a=0, b=0).gamma == 0.0        # phi == 0
    assert ng.mlp(3, 8, "abrelu", a=0, b=1).gamma == 0.5        # ReLU
    assert ng.mlp(3, 8, "abrelu", a=-0.3, b=0).gamma == 0.5
    assert ng.mlp(3, 8, "abrelu", a=0.3, b=1).gamma == 1.0      # leaky
    assert ng.mlp(3, 8, "relu").gamma == 0.5 and ng.mlp(3, 8, "erf").gamma == 1.0


@pytest.mark.parametrize("bad,err,msg", [(-3, ValueError, "batch_size must be an integer >= 0"),
                                         (2.5, ValueError, "batch_size must be an integer"),
                                         (True, TypeError, "batch_size must be an integer")])
def test_batch_size_is_checked(bad, err, msg):
    with pytest.raises(err, match=msg):
        ng.analytic_kernels(ng.mlp(2, 8), sphere_points(4, 3), batch_size=bad)


def test_data_counts_and_empty_splits(tmp_path):
    d = ng.data
    with pytest.raises(ValueError, match="n_train: the number of points must be an integer, "
                                         "got 2.5"):
        d.digits(n_train=2.5)
    with pytest.raises(ValueError, match=r"n_test: the number of points must be >= 1 \(the "
                                         r"split would be empty\), got 0"):
        d.digits(n_test=0)
    with pytest.raises(ValueError, match="n_train must be an integer, got 2.5"):
        d.sphere(2.5, 3, 4)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.random.rand(5, 3), y_train=np.array([0, 0, 1, 1, 0]),
             x_test=np.random.rand(3, 3), y_test=np.array([0, 0, 0]))
    with pytest.raises(ValueError, match=r"test set: no points of the chosen classes \(the "
                                         r"split is empty\)"):
        d.load_npz(path, classes=(1,))
    with pytest.raises(ValueError, match="training set: the number of points must be an "
                                         "integer, got 2.5"):
        d.load_npz(path, n_train=2.5)
    assert d.load_npz(path, n_train=np.int64(4), classes=(0, 1)).n_train == 4


# ------------------------------------------------------------------ issue 18: one clear message
@pytest.mark.parametrize("kwargs,message", [
    ({"kernel": 0}, "kernel must be a positive integer, got 0"),
    ({"kernel": -1}, "kernel must be a positive integer, got -1"),
    ({"kernel": 2.5}, "kernel must be an integer, got 2.5"),
    ({"strides": 0}, "strides must be a positive integer, got 0"),
    ({"padding": "same"}, "unknown padding 'same'"),
    ({"channels": [4]}, "channels must be one integer or 2 integers, got 1"),
    ({"channels": 0}, "channels must be a positive integer, got 0"),
])
def test_cnn_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ng.cnn(**{"channels": 4, **kwargs})


def test_cnn_takes_integral_floats_like_mlp():
    assert ng.cnn(4.0).widths == (4, 4)


def _images(n=3, side=5, chans=1, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, side, side, chans))
    return x / np.linalg.norm(x.reshape(n, -1), axis=1)[:, None, None, None]


@pytest.fixture(scope="module")
def small_cnn():
    import jax
    net = ng.cnn(4)
    x = _images()
    return net, x, net.init_fn(jax.random.PRNGKey(0), x.shape)[1]


def test_images_too_small_for_a_valid_kernel():
    with pytest.raises(ValueError, match=r"x_train points of shape \(5, 5, 1\) do not fit.*"
                                         r"layer 0 \(Conv\) would output shape"):
        ng.analytic_kernels(ng.cnn(4, kernel=9, padding="VALID"), _images())


def test_test_images_of_another_size(small_cnn):
    net, x, params = small_cnn
    xt = _images(2, side=7, seed=1)
    msg = r"x_test points have shape \(7, 7, 1\) but the training points \(5, 5, 1\)"
    with pytest.raises(ValueError, match=msg):
        ng.empirical_kernels(net, params, x, xt)
    with pytest.raises(ValueError, match=msg):
        ng.train("exact", net, params, (x, np.ones((3, 1)), xt, np.ones((2, 1))), steps=1)
    with pytest.raises(ValueError, match=msg):
        ng.analytic_kernels(net, x, xt)


def test_convolution_without_pooling(small_cnn):
    import jax
    net = ng.serial(ng.stax.Conv(4, (3, 3)), ng.stax.Relu(), ng.stax.Conv(1, (3, 3)))
    x = _images()
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    with pytest.raises(ValueError, match=r"output for x_train has shape .* must be \(N, C\): "
                                         "end a convolutional stack with global pooling"):
        ng.empirical_kernels(net, params, x)


def test_nchw_and_channel_mismatch(small_cnn):
    net, x, params = small_cnn
    with pytest.raises(ValueError, match=r"these look NCHW \(channels first\): use x.transpose"):
        ng.empirical_kernels(net, params, np.transpose(x, (0, 3, 1, 2)))
    with pytest.raises(ValueError, match="x_train has 3 channels .* parameters take 1"):
        ng.ngd_direction("exact", net, params, np.repeat(x, 3, -1), np.ones((3, 1)))


@pytest.mark.parametrize("batch_size,message", [(-1, "batch_size must be an integer >= 0"),
                                                (2.5, "batch_size must be an integer, got 2.5")])
def test_serial_batch_size(batch_size, message, small_cnn):
    with pytest.raises(ValueError, match=message):
        ng.analytic_kernels(small_cnn[0], small_cnn[1], batch_size=batch_size)


def test_flatten_first_takes_images():
    """serial(Flatten(), Dense(...)) on images: the same kernels as the MLP on flattened images."""
    import jax
    net = ng.serial(ng.stax.Flatten(), ng.stax.Dense(8), ng.stax.Relu(), ng.stax.Dense(1))
    x = _images()
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    K = ng.empirical_kernels(net, params, x)
    K2 = ng.empirical_kernels(net, params, x.reshape(3, -1))
    np.testing.assert_allclose(np.asarray(K.blocks_train), np.asarray(K2.blocks_train),
                               rtol=1e-12, atol=1e-14)


def test_jit_with_closed_over_arrays_and_traced_damping():
    import jax
    import jax.numpy as jnp
    net = ng.mlp(3, 16)
    x = sphere_points(4, 5)
    y = jnp.ones((4, 1))
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    for method in ("exact", "btd"):
        eager = ng.ngd_direction(method, net, params, x, y, 0.0)
        jitted = jax.jit(lambda: ng.ngd_direction(method, net, params, jnp.asarray(x), y, 0.0))()
        for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9,
                                       atol=1e-12 * float(np.abs(np.asarray(a)).max() + 1e-300))
    with pytest.raises(TypeError, match="damping is a traced value.*static_argnums"):
        jax.jit(lambda d: ng.ngd_direction("exact", net, params, x, y, d))(0.1)


def test_train_checks_each_input_once(monkeypatch):
    """`ng.train` validates at its entry only: the parameters once (one NaN pass on the device),
    x_train and x_test once each, the two target arrays once each; the empirical and the
    infinite-width kernels, the operators and the predictions reuse what was checked. (The
    kernels' own finiteness is checked once per kernel set: a property of the result.) The
    sigmoid loss takes every branch of the loop: isotropy observer, fitted lr, both operators."""
    import jax
    from ntkngd import _checks
    from ntkngd.networks.base import Network
    net = ng.mlp(3, 16)
    r = np.random.RandomState(0)
    x, xt = sphere_points(6, 4), sphere_points(4, 4, seed=1)
    y, yt = (np.sign(r.randn(6, 1)) + 1) / 2, (np.sign(r.randn(4, 1)) + 1) / 2
    params = net.init_fn(jax.random.PRNGKey(0), (-1, 4))[1]
    calls: dict = {}

    def counting(owner, name):
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    counting(type(net), "check_inputs")
    counting(Network, "check_params")
    counting(_checks, "outputs")
    counting(_checks, "finite_kernels")
    ng.train("block_diagonal", net, params, (x, y, xt, yt), steps=2, loss="bce")
    assert calls == {"check_inputs": 2, "check_params": 1, "outputs": 2, "finite_kernels": 2}
