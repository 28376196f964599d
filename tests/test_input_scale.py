"""Inputs whose kernels would overflow or underflow: one clear error, never NaN or a zero step."""
import jax
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points


@pytest.mark.parametrize("scale", [1e160, 1e-160, 1e80])
def test_mlp_direction_and_kernels_refuse_extreme_norms(scale):
    net = ng.mlp(2, 16)
    x = sphere_points(4, 9, seed=0)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with pytest.raises(ValueError, match="x_train has row norms .* rescale the inputs"):
        ng.ngd_direction("exact", net, params, x * scale, np.ones((4, 1)))
    with pytest.raises(ValueError, match="x_train has row norms .* rescale the inputs"):
        ng.empirical_kernels(net, params, x * scale)


def test_float32_limits_follow_the_dtype():
    net = ng.mlp(2, 16)
    x = sphere_points(4, 9, seed=0)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), params)
    with pytest.raises(ValueError, match=r"outside \[3.3e-10, 4.3e\+09\].*float32"):
        ng.ngd_direction("exact", net, p32, (x * 1e12).astype(np.float32), np.ones((4, 1)))
    # inside the range: exact NGD's alpha is 1 at any admissible scale
    for s in (1e-70, 1e70):
        K = ng.empirical_kernels(net, params, x * s)
        assert abs(ng.operator("exact", K).alpha - 1.0) < 1e-8


@pytest.mark.parametrize("scale", [1e80, 1e-160])
def test_cnn_refuses_extreme_norms(scale):
    net = ng.cnn(4)
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 1))
    with pytest.raises(ValueError, match="row norms|kernels overflowed"):
        ng.analytic_kernels(net, x * scale)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with pytest.raises(ValueError, match="row norms .* rescale the inputs"):
        ng.ngd_direction("exact", net, params, x * scale, np.ones((3, 1)))


def test_serial_input_check_without_dtype_uses_jax_default_float():
    """dtype=None means JAX's default float: float32 limits with x64 off (1e20 refused), float64
    limits with it on (1e20 accepted)."""
    from jax.experimental import disable_x64
    net = ng.serial(ng.stax.Dense(8), ng.stax.Relu(), ng.stax.Dense(1))
    x = sphere_points(3, 4, seed=1) * 1e20
    net.check_inputs(x)
    with disable_x64():
        with pytest.raises(ValueError, match=r"4.3e\+09\].*float32"):
            net.check_inputs(x)
