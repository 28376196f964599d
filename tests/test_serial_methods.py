"""Every method on convolutional serial networks: J d = G g, the paper's alphas, KFC and
channel-wise against the MLP implementations, training through ng.train (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ntkngd import stax  # neural-tangents stax, loaded the quiet way

import ntkngd as ng

PATTERN = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]])
METHODS = ["gd", "exact", "block_diagonal", "block_tridiagonal", "kfac", "unit_wise", "pattern"]


def _cnn(c=6, bias=0.2):
    return ng.serial(stax.Conv(c, (3, 3), padding="SAME", W_std=1.5, b_std=bias), stax.Erf(),
                     stax.Conv(c, (3, 3), strides=(2, 2), padding="VALID", b_std=bias),
                     stax.Relu(), stax.GlobalAvgPool(), stax.Dense(2, b_std=bias))


def _data(n=4, hw=7, seed=0):
    r = np.random.RandomState(seed)
    return jnp.asarray(r.randn(n, hw, hw, 2)), jnp.asarray(r.randn(n, 2))


@pytest.fixture(scope="module")
def small_cnn():
    """One network, data, parameters and finite-width kernels shared by the tests of this module
    (one compilation of the network's feature pass)."""
    net = _cnn()
    x, y = _data()
    _, params = net.init_fn(jax.random.PRNGKey(2), x.shape)
    return net, x, y, params, ng.empirical_kernels(net, params, x)


@pytest.mark.parametrize("method", METHODS)
def test_update_moves_outputs_by_the_operator(method, small_cnn):
    """J d = G g (linearized): d from patches x backprops / KFC / channel-wise, J d by jax.jvp."""
    m = ng.block_pattern(PATTERN) if method == "pattern" else method
    net, x, y, params, K = small_cnn
    d = ng.ngd_direction(m, net, params, x, y, damping=0.0)
    op = ng.operator(m, K, 0.0)
    g = np.asarray(net.apply_fn(params, x) - y).reshape(-1)
    _, jd = jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))
    want = op.train @ g
    assert np.max(np.abs(np.asarray(jd).reshape(-1) - want)) < 1e-10 * np.max(np.abs(want))


@pytest.fixture(scope="module")
def deep_cnn_kernels():
    """A 4-layer CNN's analytic and finite-width kernels (BTD alpha = 2 at L = 4)."""
    net = ng.serial(stax.Conv(6, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
                    stax.Conv(6, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
                    stax.Conv(6, (2, 2), strides=(2, 2), padding="VALID", b_std=0.1), stax.Erf(),
                    stax.GlobalAvgPool(), stax.Dense(1, b_std=0.1))
    x, _ = _data(n=5, hw=6)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    return ng.analytic_kernels(net, x), ng.empirical_kernels(net, params, x)


def test_alphas_on_cnn_kernels_analytic_and_finite(deep_cnn_kernels):
    for K in deep_cnn_kernels:
        for method, alpha in (("exact", 1.0), ("block_diagonal", 4.0),
                              ("block_tridiagonal",
                               ng.pattern_alpha(ng.tridiagonal_pattern(4).matrix))):
            op = ng.operator(method, K)
            assert op.conditions["every NTK block invertible"]
            assert abs(op.alpha - alpha) < 1e-8 and op.alpha_theory == pytest.approx(alpha)
            assert op.deviation < 1e-8
    assert ng.pattern_alpha(ng.tridiagonal_pattern(4).matrix) == pytest.approx(2.0)


def test_singular_block_is_reported():
    """A 1x1 single-channel first layer has one parameter: its finite-width block has rank 1."""
    net = ng.serial(stax.Conv(1, (1, 1)), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
    x = jnp.asarray(np.random.RandomState(0).rand(4, 3, 3, 1))
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with pytest.warns(ng.TheoryConditionWarning, match="singular"):
        op = ng.operator("block_diagonal", ng.empirical_kernels(net, params, x))
    assert op.conditions["every NTK block invertible"] is False
    assert abs(op.alpha - 2.0) > 1e-3      # G is not 2 I: the rank-1 block projects


@pytest.fixture(scope="module")
def mlp_pair():
    """An erf MLP and the same layers as a serial network, data, parameters and both kernels."""
    mlp = ng.mlp(depth=3, width=24, activation="erf", W_std=1.4, b_std=0.3, out_dim=1)
    net = ng.serial(*mlp.stax_layers())
    r = np.random.RandomState(0)
    x, xt, y = r.randn(6, 10), r.randn(6, 10), r.randn(6, 1)
    _, params = mlp.init_fn(jax.random.PRNGKey(4), x.shape)
    return (mlp, net, x, y, params, ng.empirical_kernels(mlp, params, x, xt),
            ng.empirical_kernels(net, params, x, xt))


@pytest.mark.parametrize("method", ["kfac", "unit_wise"])
def test_kfc_and_channel_wise_reduce_to_mlp_methods(method, mlp_pair):
    """On Dense-only networks (one position) KFC is K-FAC and channel-wise is unit-wise: the
    serial implementations agree with the MLP ones (independent code)."""
    mlp, net, x, y, params, K_mlp, K_net = mlp_pair
    damping = 1e-4
    a = ng.operator(method, K_net, damping)
    b = ng.operator(method, K_mlp, damping)
    scale = np.abs(b.train).max()
    assert np.abs(a.train - b.train).max() < 1e-9 * scale
    assert np.abs(a.test - b.test).max() < 1e-9 * np.abs(b.test).max()
    da = ng.ngd_direction(method, net, params, x, y, damping)
    db = ng.ngd_direction(method, mlp, params, x, y, damping)
    for u, v in zip(jax.tree_util.tree_leaves(da), jax.tree_util.tree_leaves(db)):
        assert np.abs(np.asarray(u) - np.asarray(v)).max() < 1e-8 * np.abs(np.asarray(v)).max()


def test_kfc_and_channel_wise_refuse_infinite_width(deep_cnn_kernels):
    for method in ("kfac", "unit_wise"):
        with pytest.raises(ValueError, match="finite-width"):
            ng.operator(method, deep_cnn_kernels[0])


def test_train_on_a_cnn_follows_the_predictions():
    net = _cnn(c=32, bias=0.1)
    x, y = _data(n=5, hw=5)
    xt, yt = _data(n=5, hw=5, seed=1)   # same N as training: one compilation per shape
    _, params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    log = ng.train("exact", net, params, (x, y, xt, yt), steps=1)
    assert log.alpha == pytest.approx(1.0, abs=1e-8)
    assert log.train_loss[1] < 0.1 * log.train_loss[0]
    assert log.pred_emp_train_loss[1] < 1e-20
    assert np.isfinite(log.pred_inf_test_loss).all()
    kf = ng.train("kfac", net, params, (x, y, xt, yt), steps=1)
    assert np.isnan(kf.pred_inf_train_loss).all() and kf.train_loss[1] < kf.train_loss[0]


def test_cli_check_and_train_accept_cnn(capsys):
    from ntkngd import cli
    assert cli.main(["check", "--arch", "cnn", "--channels", "8", "--n-train", "4",
                     "--n-test", "4", "--methods", "bd", "kfac"]) == 0
    out = capsys.readouterr().out
    assert "block_diagonal  alpha measured 3  predicted 3" in out
    assert "kfac  not available" in out          # infinite width: no KFC theory
    assert cli.main(["train", "--arch", "cnn", "--channels", "8", "--n-train", "4",
                     "--n-test", "4", "--steps", "1", "--method", "btd"]) == 0
    assert "CNN with 8 channels" in capsys.readouterr().out
    assert cli.main(["check", "--arch", "cnn", "--whiten", "--n-train", "5", "--n-test", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkngd check: error: --arch cnn needs square single-channel images")
    assert "without --whiten" in err



def _brute_force_direction(net, params, x, y, S):
    """Independent NGD direction of pattern S from full Jacobians (numpy): per-layer columns J_l,
    Theta_l = J_l J_l^T, [(S (x) I) blockdiag(Theta_l)] v = 1 (x) g, d_l = J_l^T v_l; S None:
    exact NGD, Theta v = g with Theta = J J^T (the same v in every layer)."""
    from jax.flatten_util import ravel_pytree
    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacrev(lambda p: net.apply_fn(unravel(p), x).reshape(-1))(flat))
    g = np.asarray(net.apply_fn(params, x) - y).reshape(-1)
    if S is None:
        return jac.T @ np.linalg.solve(jac @ jac.T, g), flat, unravel
    cols = []
    for i in net.trainable:
        mark = [jax.tree_util.tree_map(jnp.zeros_like, p) for p in params]
        mark[i] = jax.tree_util.tree_map(jnp.ones_like, params[i])
        cols.append(np.asarray(ravel_pytree(mark)[0]) > 0)
    L, m = len(cols), g.size
    thetas = [jac[:, c] @ jac[:, c].T for c in cols]
    big = np.block([[S[a, b] * thetas[b] for b in range(L)] for a in range(L)])
    v = np.linalg.solve(big, np.tile(g, L)).reshape(L, m)
    d = np.zeros_like(np.asarray(flat))
    for c, vl in zip(cols, v):
        d[c] = jac[:, c].T @ vl
    return d, flat, unravel


@pytest.mark.parametrize("method", ["exact", "block_diagonal", "block_tridiagonal"])
def test_one_step_equals_brute_force_from_full_jacobians(method, small_cnn):
    """The direction (patches x backprops of the dual vectors) and the one-step loss at
    lr = 1/alpha against full Jacobians and numpy solves, to round-off."""
    from jax.flatten_util import ravel_pytree
    net, x, y, params, K = small_cnn
    S = {"exact": None, "block_diagonal": np.eye(3), "block_tridiagonal": PATTERN}[method]
    d_bf, flat, unravel = _brute_force_direction(net, params, x, y, S)
    d = np.asarray(ravel_pytree(ng.ngd_direction(method, net, params, x, y, damping=0.0))[0])
    assert np.linalg.norm(d - d_bf) < 1e-10 * np.linalg.norm(d_bf)
    alpha = ng.operator(method, K, 0.0).alpha

    def loss(p):
        return float(ng.losses.mse.value(np.asarray(net.apply_fn(unravel(p), x)), np.asarray(y)))
    one_step, brute = loss(flat - d / alpha), loss(flat - d_bf / alpha)
    assert abs(one_step - brute) < 1e-10 * brute


def test_btd_at_three_layers_moves_only_the_middle_layer(small_cnn):
    """L = 3: T^+ 1 = (0, 1, 0), so the undamped BTD duals are v = (0, Theta_2^{-1} g, 0): only
    layer 2 moves, along block-diagonal NGD's layer-2 direction (v_2 = Theta_2^{-1} g in both)."""
    net, x, y, params, _ = small_cnn
    btd = ng.ngd_direction("block_tridiagonal", net, params, x, y, damping=0.0)
    bd = ng.ngd_direction("block_diagonal", net, params, x, y, damping=0.0)
    first, middle, last = (np.concatenate([np.ravel(a) for a in btd[i] if a is not None])
                           for i in net.trainable)
    bd_middle = np.concatenate([np.ravel(a) for a in bd[net.trainable[1]] if a is not None])
    scale = np.linalg.norm(middle)
    assert np.linalg.norm(first) < 1e-10 * scale and np.linalg.norm(last) < 1e-10 * scale
    assert np.linalg.norm(middle - bd_middle) < 1e-10 * scale


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_cross_entropy_on_a_dense_serial_network_equals_the_mlp_path(loss):
    """Directions and training logs (losses, predictions, alpha_fit) of a Dense-only serial
    network equal ng.mlp's (the MLP's own closed-form engine) under loss='ce' / BCE."""
    c = 3 if loss == "softmax_cross_entropy" else 1
    mlp = ng.mlp(depth=3, width=24, activation="erf", W_std=1.4, b_std=0.3, out_dim=c)
    net = ng.serial(*mlp.stax_layers())
    r = np.random.RandomState(0)
    x, xt = r.randn(6, 10), r.randn(6, 10)
    lab, labt = r.randint(0, 3, 6), r.randint(0, 3, 6)
    y, yt = (np.eye(3)[lab], np.eye(3)[labt]) if c == 3 else \
        ((lab[:, None] > 0).astype(float), (labt[:, None] > 0).astype(float))
    _, params = mlp.init_fn(jax.random.PRNGKey(4), x.shape)
    for method in ("gd", "exact", "block_diagonal"):
        a = ng.ngd_direction(method, net, params, x, y, 0.0, loss=loss)
        b = ng.ngd_direction(method, mlp, params, x, y, 0.0, loss=loss)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            assert np.abs(np.asarray(u) - np.asarray(v)).max() < 1e-10 * np.abs(np.asarray(v)).max()
    la = ng.train("block_diagonal", net, params, (x, y, xt, yt), steps=2, loss=loss)
    lb = ng.train("block_diagonal", mlp, params, (x, y, xt, yt), steps=2, loss=loss)
    assert la.lr == pytest.approx(lb.lr, rel=1e-12)
    for field in ("train_loss", "test_loss", "pred_emp_train_loss", "pred_emp_test_loss",
                  "pred_inf_train_loss", "pred_inf_test_loss", "alpha_fit", "deviation"):
        u, v = getattr(la, field), getattr(lb, field)
        assert np.allclose(u, v, rtol=1e-9, atol=1e-12), (field, u, v)


def test_cross_entropy_training_on_a_cnn(small_cnn):
    """Block-diagonal NGD with softmax cross-entropy on a CNN: the linearized step is 3 H^+ r at
    initialization (alpha_fit = L, deviation at round-off), and the loss falls."""
    net, x, _, params, _ = small_cnn
    y = np.eye(2)[[0, 1, 1, 0]]
    xt = x[::-1]
    log = ng.train("block_diagonal", net, params, (x, y, xt, y[::-1]), steps=2, loss="ce")
    assert log.alpha_fit[0] == pytest.approx(3.0, abs=1e-8) and log.deviation[0] < 1e-8
    assert log.train_loss[2] < log.train_loss[1] < log.train_loss[0]
    assert np.isfinite(log.pred_inf_train_loss).all()


def test_kfc_with_cross_entropy_equals_its_kronecker_factors(small_cnn):
    """KFC with the softmax cross-entropy on a CNN: per layer d = (A + lam)^-1 G (B + lam)^-1 with
    A = sum_(n,s) Ht Ht^T / N, B = sum_((n,c),s) (H^1/2 D)(H^1/2 D)^T / (N S) and the gradient
    G = J^T r / N, all formed here from the patches and backprops (brute force, float64)."""
    net, x, _, params, K = small_cnn
    y = np.eye(2)[[0, 1, 1, 0]]
    rho = 1e-3
    lam = np.sqrt(rho)
    got = ng.ngd_direction("kfac", net, params, x, y, rho, loss="ce")
    f = np.asarray(net.apply_fn(params, x), np.float64)
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    w, u = np.linalg.eigh(np.einsum("nc,cd->ncd", p, np.eye(2)) - p[:, :, None] * p[:, None, :])
    root = np.einsum("nij,nj,nkj->nik", u, np.sqrt(np.clip(w, 0, None)), u)
    n = x.shape[0]
    for l, i in enumerate(net.trainable):
        ht = np.asarray(K.layer_inputs_train[l])
        s = ht.shape[1]
        d = np.asarray(K.backprops_train[l]).reshape(n, 2, s, -1)
        dr = np.einsum("ncd,ndsm->ncsm", root, d)
        A = np.einsum("nsk,nsj->kj", ht, ht) / n + lam * np.eye(ht.shape[-1])
        B = np.einsum("ncsm,ncsj->mj", dr, dr) / (n * s) + lam * np.eye(d.shape[-1])
        G = np.einsum("nsk,ncsm,nc->km", ht, d, p - y) / n
        want = np.linalg.solve(A, G) @ np.linalg.inv(B)
        W, b = got[i]
        aug = np.concatenate([np.asarray(W).reshape(-1, W.shape[-1]),
                              np.asarray(b).reshape(1, -1)])
        assert np.abs(aug - want).max() < 1e-8 * np.abs(want).max()
