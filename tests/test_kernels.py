"""Analytic per-layer kernels against neural-tangents and against brute-force finite networks."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("b_std", [0.0, 0.2])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_blocks_sum_to_neural_tangents_ntk(activation, b_std, depth):
    rng = np.random.RandomState(depth)
    x, xt = rng.randn(9, 4), rng.randn(5, 4)
    net = ng.mlp(depth, 32, activation, W_std=1.3, b_std=b_std, out_dim=2)
    K = ng.analytic_kernels(net, x, xt)
    assert K.blocks_train.shape == (depth, 9, 9) and K.blocks_test.shape == (depth, 5, 9)
    assert K.blocks_train.dtype == jnp.float64
    assert _rel(K.ntk_train, net.kernel_fn(x, None, "ntk")) < 1e-10
    assert _rel(K.ntk_test, net.kernel_fn(xt, x, "ntk")) < 1e-10
    # the forward kernel of the output layer's input is the NNGP of the last hidden layer + bias,
    # and the output NNGP matches neural-tangents
    assert _rel(K.nngp_train, net.kernel_fn(x, None, "nngp")) < 1e-10
    # Theta_l = Q_l * B_l, B_L = 1
    np.testing.assert_allclose(K.blocks_train, K.fwd_train * K.bwd_train, rtol=1e-14)
    np.testing.assert_allclose(K.bwd_train[-1], 1.0)


def test_batched_kernels_equal_unbatched():
    rng = np.random.RandomState(0)
    x, xt = rng.randn(12, 3), rng.randn(7, 3)
    net = ng.mlp(3, 16, "erf", b_std=0.1)
    K, Kb = ng.analytic_kernels(net, x, xt), ng.analytic_kernels(net, x, xt, batch_size=4)
    assert _rel(Kb.blocks_train, K.blocks_train) < 1e-12
    assert _rel(Kb.blocks_test, K.blocks_test) < 1e-12


def _brute_force_blocks(net, x, seed):
    """Per-layer NTK blocks J_l J_l^T of one finite network from full Jacobians."""
    params = net.init_fn(jax.random.PRNGKey(seed), x.shape)[1]
    f = lambda p: net.apply_fn(p, x)[:, 0]
    jac = jax.jacrev(f)(params)
    blocks = []
    for layer in jac:
        if not layer:          # activation layers have no parameters
            continue
        flat = [j.reshape(x.shape[0], -1) for j in layer if j is not None]
        blocks.append(sum(j @ j.T for j in flat))
    return np.stack(blocks)


def _empirical_blocks(net, x, seed):
    """The library's per-layer blocks of one finite network (equal to `_brute_force_blocks` to
    1e-10: tests/test_empirical.py::test_blocks_match_brute_force_jacobians)."""
    from ntkngd.networks.empirical import empirical_kernels
    params = net.init_fn(jax.random.PRNGKey(seed), x.shape)[1]
    return np.asarray(empirical_kernels(net, params, x).blocks_train)


@pytest.mark.parametrize("blocks", [
    _empirical_blocks,
    # the same widths through full Jacobians (an 800 MB one at width 4096): make test-slow
    pytest.param(_brute_force_blocks, marks=pytest.mark.slow)])
def test_finite_width_blocks_converge_to_analytic(blocks):
    x = sphere_points(6, 4, seed=3)
    net_inf = ng.mlp(3, 1, "relu", b_std=0.1)
    K = ng.analytic_kernels(net_inf, x)
    gaps = {}
    for width, seeds in [(512, range(3)), (4096, range(2))]:
        net = ng.mlp(3, width, "relu", b_std=0.1)
        errs = [_rel(blocks(net, x, s), K.blocks_train) for s in seeds]
        gaps[width] = float(np.mean(errs))
    # fluctuations of the empirical NTK are O(1/sqrt(width)): expect ~sqrt(8) = 2.8x smaller
    assert gaps[4096] < gaps[512] / 1.5, gaps
    assert gaps[4096] < 0.1, gaps


def test_kernels_reject_bad_input():
    net = ng.mlp(2, 8)
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        ng.analytic_kernels(net, np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="empty"):
        ng.analytic_kernels(net, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="features"):
        ng.analytic_kernels(net, x, np.ones((2, 5)))
    with pytest.raises(ValueError, match="2-dimensional"):
        ng.analytic_kernels(net, np.ones(4))
    with pytest.raises(TypeError, match="Network"):
        ng.analytic_kernels("mlp", x)


def test_mlp_options_and_errors():
    net = ng.mlp(4, [8, 16, 32], "gelu", b_std=0.5, out_dim=3)
    assert net.layer_widths == (8, 16, 32, 3) and net.has_bias
    assert ng.mlp(3, 8, "relu").gamma == 0.5 and ng.mlp(3, 8, "erf").gamma == 1.0
    for act in ng.ACTIVATIONS:
        K = ng.analytic_kernels(ng.mlp(2, 8, act, W_std=1.1, b_std=0.1), np.eye(3))
        assert np.all(np.isfinite(K.blocks_train))
    with pytest.raises(ValueError, match="unknown activation"):
        ng.mlp(2, 8, "swish")
    with pytest.raises(ValueError, match="depth - 1"):
        ng.mlp(3, [8, 8, 8])
    with pytest.raises(ValueError, match="depth"):
        ng.mlp(0, 8)
    with pytest.raises(ValueError, match="W_std"):
        ng.mlp(2, 8, W_std=-1.0)


def test_batched_kernels_on_two_simulated_devices():
    """nt.batch tiles over all local devices: two simulated CPU devices give the same kernels."""
    import subprocess
    import sys
    code = (
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "import numpy as np, ntkngd as ng\n"
        "assert jax.local_device_count() == 2\n"
        "r = np.random.RandomState(0); x, xt = r.randn(12, 3), r.randn(8, 3)\n"
        "net = ng.mlp(3, 16, 'erf', b_std=0.1)\n"
        "a, b = ng.analytic_kernels(net, x, xt), ng.analytic_kernels(net, x, xt, batch_size=4)\n"
        "print(float(np.abs(a.blocks_test - b.blocks_test).max()),"
        " float(np.abs(a.blocks_train - b.blocks_train).max()))\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    errs = [float(v) for v in out.stdout.split()[-2:]]
    assert max(errs) < 1e-10, errs
