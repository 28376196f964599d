"""One network protocol (ntkngd.networks): the same engine, methods and loop for MLPs and any stax
stack. A CNN's NGD step is jittable with no host transfer; `train` on a CNN is the jitted step it
loops over; a layer method registered here (K-FAC with an exact output-layer block) runs on an
MLP and a CNN without naming either; a Dense-only serial network is `ng.mlp` for every built-in
method (float64)."""
from __future__ import annotations

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import methods, stax  # noqa: E402
from ntkngd.dynamics.linear import Operator  # noqa: E402
from ntkngd.engine import apply_update  # noqa: E402
from ntkngd.networks.empirical import contract, dual_signals  # noqa: E402
from ntkngd.training.observers import method_step  # noqa: E402

N, C = 5, 2


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        yield


def _cnn():
    return ng.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), stax.Erf(),
                     stax.Conv(4, (3, 3), strides=(2, 2), padding="VALID", b_std=0.2),
                     stax.Relu(), stax.GlobalAvgPool(), stax.Dense(C, b_std=0.2))


@pytest.fixture(scope="module")
def cnn():
    r = np.random.RandomState(0)
    x, xt = r.randn(N, 6, 6, 2), r.randn(N, 6, 6, 2)
    y, yt = 0.5 * np.sign(r.randn(N, C)), 0.5 * np.sign(r.randn(N, C))
    net = _cnn()
    _, params = net.init_fn(jax.random.PRNGKey(2), x.shape)
    return net, params, (x, y, xt, yt)


@pytest.fixture(scope="module")
def mlp():
    r = np.random.RandomState(1)
    x, xt = r.randn(N, 8), r.randn(N, 8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)
    y, yt = 0.5 * np.sign(r.randn(N, C)), 0.5 * np.sign(r.randn(N, C))
    net = ng.mlp(3, 32, "relu", b_std=0.1, out_dim=C)
    _, params = net.init_fn(jax.random.PRNGKey(3), x.shape)
    return net, params, (x, y, xt, yt)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------- a CNN step under jax.jit
@pytest.mark.parametrize("method", ["exact", "block_diagonal", "kfac"])
def test_ngd_transform_on_a_cnn_is_jittable_without_host_transfers(method, cnn):
    net, params, (x, y, _, _) = cnn
    tx = optax.chain(ng.ngd_transform(method, net, damping=1e-3), optax.scale(-0.1))

    @jax.jit
    def step(p, s, xb, yb):
        updates, s = tx.update(p, s, p, x=xb, y=yb)
        return optax.apply_updates(p, updates), s

    p = jax.device_put(params)
    s = tx.init(p)
    xj, yj = jax.device_put(jnp.asarray(x)), jax.device_put(jnp.asarray(y))
    want = apply_update(params, ng.ngd_direction(method, net, params, x, y, 1e-3), 0.1)
    step(p, s, xj, yj)                                   # compile outside the guard
    with jax.transfer_guard("disallow"):
        got, _ = step(p, s, xj, yj)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert _rel(a, b) < 1e-12


@pytest.mark.parametrize("method,loss", [("block_tridiagonal", "mse"), ("kfac", "mse"),
                                         ("block_diagonal", "ce")])
def test_cnn_train_equals_manual_jitted_steps(method, loss, cnn):
    """`train` on a CNN is its lr and damping applied by the jitted step, step after step."""
    net, params, (x, y, xt, yt) = cnn
    if loss == "ce":
        y, yt = np.eye(C)[[0, 1, 1, 0, 1]], np.eye(C)[[1, 0, 0, 1, 1]]
    steps = 3
    log = ng.train(method, net, params, (x, y, xt, yt), steps=steps, loss=loss)
    L = ng.get_loss(loss)
    step = jax.jit(lambda p, xb, yb: apply_update(
        p, ng.ngd_direction(method, net, p, xb, yb, log.damping, loss), log.lr))
    p = params
    for t in range(steps + 1):
        for xs, ys, want in ((x, y, log.train_loss[t]), (xt, yt, log.test_loss[t])):
            got = float(L.value(net.apply_fn(p, xs), ys))
            assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (t, got, want)
        p = step(p, jnp.asarray(x), jnp.asarray(y))
    assert log.train_loss[-1] < log.train_loss[0]


# ---------------------------------------------------------------- a layer method from here
def _layers(K, part: slice):
    """K restricted to the trainable layers `part` (finite width: blocks, Grams and features)."""
    pick = lambda a: None if a is None else a[part]          # noqa: E731
    return K.replace(**{k: pick(getattr(K, k)) for k in (
        "blocks_train", "fwd_train", "bwd_train", "blocks_test", "fwd_test", "bwd_test",
        "layer_inputs_train", "layer_inputs_test", "backprops_train", "backprops_test")})


def _kfac_exact_out_update(K, damping, f, y, loss):
    """K-FAC on layers 1..L-1, exact NGD on the output layer's own block: built from the
    registry's K-FAC and exact methods, through the network protocol only."""
    head = methods.get_method("kfac").directions(_layers(K, slice(0, -1)), damping, f, y, loss)
    out = _layers(K, slice(-1, None))
    v = methods.get_method("exact").duals(out, damping, f, y, loss)
    return head + list(contract(out.layer_inputs_train,
                                dual_signals(out.backprops_train, list(v), K.out_dim)))


def _kfac_exact_out_operator(K, damping) -> Operator:
    """G r = J d(r), column by column from the linearized step (finite width only)."""
    m = methods.get_method("kfac_exact_out")
    eye = np.eye(K.n_train * K.out_dim).reshape(-1, K.n_train, K.out_dim)
    cols = [method_step(m, K, damping, e, np.zeros_like(e), "mse").reshape(-1) for e in eye]
    return Operator("kfac_exact_out", np.stack(cols, 1), None, None, float(damping), K.out_dim,
                    False, {}, ())


@pytest.fixture
def kfac_exact_out():
    m = ng.register_method(ng.Method("kfac_exact_out", _kfac_exact_out_operator, None,
                                     update=_kfac_exact_out_update))
    yield m
    methods.REGISTRY.pop("kfac_exact_out")


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_a_layer_method_registered_here_runs_on_mlps_and_cnns(which, kfac_exact_out, request):
    net, params, (x, y, xt, yt) = request.getfixturevalue(which)
    rho = 1e-3
    d = ng.ngd_direction("kfac_exact_out", net, params, x, y, rho)
    kf = ng.ngd_direction("kfac", net, params, x, y, rho)
    last = net.trainable[-1]
    for i in net.trainable[:-1]:                 # hidden layers: K-FAC's own direction
        for a, b in zip(d[i], kf[i]):
            assert _rel(a, b) < 1e-10
    # the output layer alone moves f by Theta_L (Theta_L + N rho)^-1 r (forward-mode autodiff)
    only_last = [jax.tree_util.tree_map(jnp.zeros_like, p) if i != last else p
                 for i, p in enumerate(d)]
    jd = jax.jvp(lambda p: net.apply_fn(p, x), (params,), (only_last,))[1]
    K = ng.empirical_kernels(net, params, x)
    theta = np.asarray(K.blocks_train[-1])
    r = (np.asarray(net.apply_fn(params, x)) - y).reshape(-1)
    assert _rel(np.asarray(jd).reshape(-1), theta @ np.linalg.solve(theta + N * rho * np.eye(
        len(theta)), r)) < 1e-9
    op = ng.operator("kfac_exact_out", K, rho)           # J d = G r
    full = jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1]
    assert _rel(op.train @ r, np.asarray(full).reshape(-1)) < 1e-9
    log = ng.train("kfac_exact_out", net, params, (x, y, xt, yt), steps=2, damping=rho)
    assert log.alpha == pytest.approx(op.alpha) and log.train_loss[2] < log.train_loss[0]
    assert np.isnan(log.pred_inf_train_loss).all()       # no infinite-width operator


# ---------------------------------------------------------------- Dense-only serial == mlp
@pytest.fixture(scope="module")
def dense_pair():
    net = ng.mlp(3, 24, "erf", W_std=1.4, b_std=0.3, out_dim=C)
    twin = ng.serial(stax.Dense(24, W_std=1.4, b_std=0.3), stax.Erf(),
                     stax.Dense(24, W_std=1.4, b_std=0.3), stax.Erf(),
                     stax.Dense(C, W_std=1.4, b_std=0.3))
    r = np.random.RandomState(4)
    x, xt, y = r.randn(6, 10), r.randn(4, 10), r.randn(6, C)
    _, params = net.init_fn(jax.random.PRNGKey(4), x.shape)
    return net, twin, params, x, xt, y, ng.empirical_kernels(net, params, x, xt), \
        ng.empirical_kernels(twin, params, x, xt)


@pytest.mark.parametrize("method", methods.METHODS + methods.CURVATURE_METHODS)
def test_a_dense_only_serial_network_is_the_mlp(method, dense_pair):
    """Stax-VJP features vs the MLP's closed forms: same kernels, operators and directions."""
    net, twin, params, x, xt, y, K, K2 = dense_pair
    for a, b in zip(jax.tree_util.tree_leaves(ng.ngd_direction(method, twin, params, x, y)),
                    jax.tree_util.tree_leaves(ng.ngd_direction(method, net, params, x, y))):
        assert _rel(a, b) < 1e-10
    if method != "shampoo":                         # shampoo has no fixed operator
        a, b = ng.operator(method, K2), ng.operator(method, K)
        assert _rel(a.train, b.train) < 1e-10 and _rel(a.test, b.test) < 1e-10
