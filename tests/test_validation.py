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
    with pytest.raises(ValueError, match="kernels overflowed"):
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
