"""Parameter-space updates of every method reproduce their function-space operators; training log."""
from __future__ import annotations

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd.networks.empirical import empirical_kernels  # noqa: E402
from ntkngd.engine import ngd_direction, ngd_transform  # noqa: E402
from ntkngd.training.loop import train  # noqa: E402
from ntkngd.methods import unitwise  # noqa: E402

N, NT, D = 6, 3, 10


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        yield


def _setup(depth, width=24, act="relu", b_std=0.0, c=1, seed=0):
    net = ng.mlp(depth, width, act, W_std=2 ** 0.5, b_std=b_std, out_dim=c)
    _, params = net.init_fn(jax.random.PRNGKey(seed), (-1, D))
    rng = np.random.default_rng(seed)
    x, xt = rng.standard_normal((N, D)), rng.standard_normal((NT, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)
    y = 0.5 * np.sign(rng.standard_normal((N, c)))
    return net, params, x, y, xt


def _jvp(net, params, d, x):
    return np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1]).reshape(-1)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


PATTERN_5 = ng.block_pattern(np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                                       [0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]), "custom")
CASES = [  # depth, activation, b_std, out_dim, methods, damping
    (2, "relu", 0.0, 1, ["gd", "exact", "bd", "btd", "kfac", "unit_wise"], 0.0),
    (5, "relu", 0.2, 1, ["exact", "bd", "btd", PATTERN_5, "kfac", "unit_wise"], 0.0),
    (3, "erf", 0.3, 2, ["gd", "exact", "bd", "btd", "kfac", "unit_wise"], 0.0),
    (3, "relu", 0.0, 2, ["exact", "bd", "btd", "kfac", "unit_wise"], 1e-3),
    (5, "erf", 0.0, 1, ["btd", PATTERN_5, "kfac", "unit_wise"], 1e-4),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c[0]}-{c[1]}-b{c[2]}-C{c[3]}-rho{c[5]}")
def test_update_reproduces_operator(case):
    """J d = G g on training points and J' d = G' g on test points (Delta f = -lr G g)."""
    depth, act, b_std, c, methods, rho = case
    net, params, x, y, xt = _setup(depth, act=act, b_std=b_std, c=c)
    K = empirical_kernels(net, params, x, xt)
    g = (np.asarray(net.apply_fn(params, x)) - y).reshape(-1)
    for m in methods:
        op = ng.operator(m, K, rho)
        d = ngd_direction(m, net, params, x, y, damping=rho)
        tol = 1e-6 if (m == "unit_wise" and rho == 0) else 1e-10   # eigh pseudo-inverse
        assert _rel(_jvp(net, params, d, x), op.train @ g) < tol, m
        assert _rel(_jvp(net, params, d, xt), op.test @ g) < tol, m


def test_gd_direction_is_loss_gradient():
    net, params, x, y, _ = _setup(3, b_std=0.1, c=2)
    loss = lambda p: 0.5 * jnp.sum((net.apply_fn(p, x) - y) ** 2) / N
    grad = jax.grad(loss)(params)
    d = ngd_direction("gd", net, params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(grad)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    assert jax.tree_util.tree_structure(d) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("c", [1, 2])
def test_kfac_isotropic_from_real_parameters(c):
    """N <= d and N C <= width: G = (N (L - 1) + 1) I (literal K-FAC)."""
    net, params, x, y, xt = _setup(3, width=32, c=c)
    op = ng.operator("kfac", empirical_kernels(net, params, x, xt))
    assert op.alpha_theory == N * 2 + 1
    assert abs(op.alpha - (N * 2 + 1)) < 1e-9 and op.deviation < 1e-10


def test_unit_wise_diagonal_counts_active_units():
    """ReLU, C = 1, rho = 0: G is diagonal with entry n = active (unit, layer) pairs on x_n."""
    net, params, x, y, xt = _setup(3, width=24)
    K = empirical_kernels(net, params, x, xt)
    op = ng.operator("unit_wise", K, 0.0)
    off = op.train - np.diag(np.diag(op.train))
    assert np.max(np.abs(off)) < 1e-8 * np.max(np.abs(op.train))
    counts = unitwise.active_counts(K)
    np.testing.assert_allclose(np.diag(op.train), counts, atol=1e-8)
    assert np.all(counts < 2 * 24 + 1) and np.all(counts > 1)
    assert op.alpha_theory == pytest.approx(counts.mean())


def test_unit_wise_default_damping():
    net, params, x, y, xt = _setup(3, width=24)
    K = empirical_kernels(net, params, x, xt)
    rho = unitwise.default_damping(K)
    units = 2 * 24 + 1                              # two hidden layers of 24 units, one output
    assert N * rho == pytest.approx(3e-4 * np.mean(np.diag(K.ntk_train)) / units, rel=1e-12)
    d_none = ngd_direction("unit_wise", net, params, x, y, damping=None)
    d_rho = ngd_direction("unit_wise", net, params, x, y, damping=rho)
    for a, b in zip(jax.tree_util.tree_leaves(d_none), jax.tree_util.tree_leaves(d_rho)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_optax_transform_in_chain():
    net, params, x, y, _ = _setup(3, b_std=0.1)
    lr = 0.5
    tx = optax.chain(ngd_transform("bd", net), optax.scale(-lr))
    state = tx.init(params)
    grads = jax.grad(lambda p: jnp.sum(net.apply_fn(p, x)))(params)
    updates, state = tx.update(grads, state, params, x=x, y=y)
    new = optax.apply_updates(params, updates)
    d = ngd_direction("bd", net, params, x, y)
    for a, b, p in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(d),
                       jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, p - lr * b, rtol=1e-12)
    with pytest.raises(ValueError, match="batch"):
        tx.update(grads, state, params)


def test_float32_direction():
    net, params, x, y, xt = _setup(3, width=32, b_std=0.1)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    d32 = ngd_direction("kfac", net, p32, x, y)
    d64 = ngd_direction("kfac", net, params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(d32), jax.tree_util.tree_leaves(d64)):
        assert a.dtype == jnp.float32
        assert _rel(np.asarray(a), np.asarray(b)) < 1e-3


def test_train_log_and_predictions():
    net, params, x, y, xt = _setup(3, width=64)
    yt = 0.5 * np.sign(np.random.default_rng(5).standard_normal((NT, 1)))
    log = train("exact", net, params, (x, y, xt, yt), steps=3)
    assert log.lr == pytest.approx(1.0) and log.step.tolist() == [0, 1, 2, 3]
    for a in (log.train_loss, log.test_loss, log.train_acc, log.pred_emp_train_loss,
              log.pred_emp_test_loss, log.pred_inf_train_loss, log.pred_inf_test_loss):
        assert a.shape == (4,) and np.all(np.isfinite(a))
    assert log.train_loss[1] < 0.2 * log.train_loss[0]
    assert log.pred_emp_train_loss[1] < 1e-20 and log.pred_inf_train_loss[1] < 1e-20
    assert log.train_loss[0] == pytest.approx(log.pred_emp_train_loss[0])
    # test loss after one step close to the linearized (empirical-kernel) prediction
    assert abs(log.test_loss[1] - log.pred_emp_test_loss[1]) < 0.5 * log.test_loss[0]
    assert "pred emp" in log.table() and len(log.table().splitlines()) == 6
    assert type(log) is ng.TrainLog and log.alpha_fit is None and log.notes == ()


def test_one_train_log_type_for_every_loss():
    """train(loss="ce") returns the same TrainLog (CETrainLog is an alias) with the per-step
    isotropy fields filled: alpha_fit has T entries, and exact NGD's linearized CE step is
    alpha Hs^+ r (deviation at round-off)."""
    net, params, x, _, xt = _setup(3, width=64, c=3)
    y, yt = np.eye(3)[np.arange(N) % 3], np.eye(3)[np.arange(NT) % 3]
    log = train("exact", net, params, (x, y, xt, yt), steps=2, loss="ce")
    assert ng.CETrainLog is ng.TrainLog and type(log) is ng.TrainLog
    assert log.alpha_fit.shape == (2,) and log.pred_inf_train_acc.shape == (3,)
    assert np.all(log.deviation < 1e-8) and log.alpha == pytest.approx(1.0)   # S = 1 1^T
    assert "(cross-entropy)" in log.table() and len(log.table().splitlines()) == 5 + len(log.notes)


def test_log_header_names_the_loss_it_trained():
    """Shampoo under MSE has no constant operator (per-step alpha fit logged) but is no
    cross-entropy run: the header says neither; with loss="bce" it says so."""
    net, params, x, y, xt = _setup(3, width=32)
    log = train("shampoo", net, params, (x, y, xt, y[:NT]), steps=1)
    head = log.table().splitlines()[0]
    assert log.measured and log.loss == "mse" and head.startswith("shampoo: lr ")
    assert "cross-entropy" not in head and "reference alpha" in head
    y01, yt01 = (y > 0).astype(float), (y[:NT] > 0).astype(float)
    log = train("exact", net, params, (x, y01, xt, yt01), steps=1, loss="bce")
    assert log.table().startswith("exact (binary cross-entropy): lr ")


def test_train_unit_wise_and_multiclass():
    net, params, x, y, xt = _setup(3, width=32, c=2)
    yt = np.eye(2)[np.arange(NT) % 2]
    log = train("unit_wise", net, params, (x, y, xt, yt), steps=2, damping=None)
    assert log.damping > 0 and np.all(np.isfinite(log.pred_inf_test_loss))
    np.testing.assert_allclose(log.pred_inf_test_loss, log.pred_emp_test_loss)
    log = train("kfac", net, params, (x, y, xt, yt), steps=1, lr=0.01)
    assert log.lr == 0.01 and log.train_loss[1] < log.train_loss[0]


# ------------------------------------------------------------------ bad input
def test_bad_input():
    net, params, x, y, xt = _setup(2)
    data = (x, y, xt, y[:NT])
    with pytest.raises(ValueError, match="unknown method"):
        ngd_direction("newton", net, params, x, y)
    with pytest.raises(ValueError, match="damping"):
        ngd_direction("exact", net, params, x, y, damping=-1.0)
    with pytest.raises(ValueError, match="damping"):
        ngd_transform("exact", net, damping=-1.0)
    with pytest.raises(ValueError, match="y_train"):
        ngd_direction("exact", net, params, x, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        ngd_direction("exact", net, params, x, np.full_like(y, np.nan))
    with pytest.raises(ValueError, match="stax layers"):
        ngd_direction("exact", net, params[:1], x, y)
    with pytest.raises(ValueError, match="lr"):
        train("exact", net, params, data, lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        train("exact", net, params, data, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        train("exact", net, params, data, steps=0)
    with pytest.raises(ValueError, match="tuple"):
        train("exact", net, params, (x, y))
    with pytest.raises(ValueError, match="unknown method"):
        train("adam", net, params, data)
    Ka = ng.analytic_kernels(net, x)
    from ntkngd.engine import signals
    with pytest.raises(ValueError, match="empirical_kernels"):
        signals("kfac", Ka, 0.0, y)
