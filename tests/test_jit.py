"""The finite-width engine under jax.jit: optax loops, no host transfers, float32 against float64."""
from __future__ import annotations

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import losses  # noqa: E402

N, NT, D = 8, 4, 12
ALL = ["gd", "exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        yield


def _setup(c=1, width=48, seed=0, ce=False):
    rs = np.random.RandomState(seed)
    x = rs.randn(N + NT, D)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.eye(c)[rs.randint(0, c, N + NT)] if ce else 0.5 * np.sign(rs.randn(N + NT, c))
    net = ng.mlp(3, width, "relu", b_std=0.1, out_dim=c)
    params = net.init_fn(jax.random.PRNGKey(seed), (-1, D))[1]
    return net, params, x[:N], y[:N], x[N:], y[N:]


@pytest.mark.parametrize("method,loss,c", [("exact", "mse", 1), ("kfac", "mse", 2),
                                           ("unit_wise", "mse", 1), ("btd", "ce", 3)])
def test_jitted_optax_loop_equals_train(method, loss, c):
    """A jitted optax loop (ngd_transform + scale) reproduces ng.train's losses step by step."""
    net, params, x, y, xt, yt = _setup(c, ce=loss == "ce")
    steps = 3
    log = ng.train(method, net, params, (x, y, xt, yt), steps=steps, loss=loss)
    rho = log.damping
    tx = optax.chain(ng.ngd_transform(method, net, damping=rho, loss=loss), optax.scale(-log.lr))
    L = ng.get_loss(loss)

    @jax.jit
    def step(p, s, xb, yb):
        updates, s = tx.update(p, s, p, x=xb, y=yb)
        return optax.apply_updates(p, updates), s

    p, s = params, tx.init(params)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    for t in range(steps + 1):
        got = float(L.value(net.apply_fn(p, x), y))
        assert abs(got - log.train_loss[t]) <= 1e-12 * max(1.0, abs(got)), (t, got)
        p, s = step(p, s, xj, yj)


def test_jitted_step_makes_no_host_transfer():
    net, params, x, y, _, _ = _setup(2)
    tx = optax.chain(ng.ngd_transform("kfac", net), optax.scale(-0.01))
    step_dir = jax.jit(ng.ngd_direction, static_argnums=(0, 1, 5, 6))

    @jax.jit
    def step(p, s, xb, yb):
        updates, s = tx.update(p, s, p, x=xb, y=yb)
        return optax.apply_updates(p, updates), s

    p = jax.device_put(params)
    s = tx.init(p)
    xj, yj = jax.device_put(jnp.asarray(x)), jax.device_put(jnp.asarray(y))
    step(p, s, xj, yj)                                   # compile outside the guard
    step_dir("unit_wise", net, p, xj, yj, None, "mse")
    with jax.transfer_guard("disallow"):
        p2, _ = step(p, s, xj, yj)
        d = step_dir("unit_wise", net, p, xj, yj, None, "mse")
        jax.block_until_ready((p2, d))
    ref = ng.ngd_direction("unit_wise", net, params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("loss,c", [("mse", 2), ("ce", 3)])
def test_float32_agrees_with_float64(loss, c):
    """Documented accuracy of the float32 engine: directions within 1e-3 relative (max norm) of
    float64 on a well-conditioned problem (kernel condition numbers < 1e3)."""
    net, params, x, y, _, _ = _setup(c, ce=loss == "ce")
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    methods = ALL if loss == "mse" else ALL[:4]
    for m in methods:
        rho = None if m != "unit_wise" or loss == "mse" else 1e-3
        d64 = ng.ngd_direction(m, net, params, x, y, rho, loss)
        d32 = ng.ngd_direction(m, net, p32, x, y, rho, loss)
        for a, b in zip(jax.tree_util.tree_leaves(d32), jax.tree_util.tree_leaves(d64)):
            assert a.dtype == jnp.float32
            err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            assert err < 1e-3, (m, err)


def test_direction_jits_with_static_method_and_damping():
    net, params, x, y, _, _ = _setup(1)
    f = jax.jit(ng.ngd_direction, static_argnums=(0, 1, 5, 6))
    for m in ALL:
        a = f(m, net, params, jnp.asarray(x), jnp.asarray(y), 1e-3, losses.mse)
        b = ng.ngd_direction(m, net, params, x, y, 1e-3)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)
