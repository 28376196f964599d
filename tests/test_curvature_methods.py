"""Diagonal Fisher, E-KFAC and Shampoo (ntkngd.methods.diagonal / ekfac / shampoo) against brute
force from full per-sample Jacobians (jax.jacrev of the whole network, float64, dense numpy
eigendecompositions and SVDs in the full parameter space), on an MLP and a CNN, every loss, with
damping > 0 and at 0; jit, optax and train."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import ntkngd as ng
from ntkngd import linalg
from neural_tangents import stax  # noqa: E402  (after ntkngd: its lean import hook)

TOL = 1e-8          # acceptance: agreement of the directions with the brute force


# ---------------------------------------------------------------- brute force
def _per_sample_loss(loss, f_n, y_n):
    return ng.get_loss(loss).value(f_n[None], y_n[None])


def _brute(net, params, x, y, loss):
    """Full Jacobian blocks J_l (N, C, k+1, M) per trainable layer, residuals r (N, C) and output
    Hessians H (N, C, C) from jax.grad / jax.hessian of the per-sample loss (not the library's)."""
    flat, unravel = ravel_pytree(params)
    f = net.apply_fn(params, x)
    n, c = f.shape
    jac = np.asarray(jax.jacrev(lambda p: net.apply_fn(unravel(p), x))(flat))   # (N, C, P)
    y = jnp.asarray(y, f.dtype)
    r = np.asarray(jax.vmap(jax.grad(lambda a, b: _per_sample_loss(loss, a, b)))(f, y))
    H = np.asarray(jax.vmap(jax.hessian(lambda a, b: _per_sample_loss(loss, a, b)))(f, y))
    idx = [i for i, p in enumerate(params) if p not in ((), [])]
    blocks, start = [], 0
    sizes = [sum(int(np.size(a)) for a in p if a is not None) for p in params]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for i in idx:
        W = params[i][0]
        m = W.shape[-1]
        blocks.append(jac[:, :, offsets[i]:offsets[i + 1]].reshape(n, c, -1, m))
    return blocks, r, H, idx


def _fisher_rows(Jl, H):
    """Rows of H_n^{1/2} J_l: F_l = R^T R / N."""
    w, u = np.linalg.eigh(H)
    root = np.einsum("nij,nj,nkj->nik", u, np.sqrt(np.clip(w, 0, None)), u)
    return np.einsum("ncd,ndkm->nckm", root, Jl)


def brute_diagonal(Jl, r, H, rho):
    n = Jl.shape[0]
    g = np.einsum("nckm,nc->km", Jl, r) / n
    fd = np.sum(_fisher_rows(Jl, H) ** 2, axis=(0, 1)) / n
    if rho > 0:
        return g / (fd + rho)
    keep = fd > np.finfo(float).eps * fd.max()
    return np.where(keep, g / np.where(keep, fd, 1.0), 0.0)


def brute_ekfac(Jl, r, H, rho, h, dr):
    """h (N, S, k), dr (N, C, S, M) rooted backprops: the K-FAC factors, full eigh."""
    n = Jl.shape[0]
    A = np.einsum("nsk,nsj->kj", h, h) / n
    B = np.einsum("ncsm,ncsj->mj", dr, dr) / n
    ua, ub = np.linalg.eigh(A)[1], np.linalg.eigh(B)[1]
    rows = _fisher_rows(Jl, H)
    s = np.sum(np.einsum("ka,nckm,mb->ncab", ua, rows, ub) ** 2, axis=(0, 1)) / n
    g = ua.T @ (np.einsum("nckm,nc->km", Jl, r) / n) @ ub
    if rho > 0:
        inv = 1.0 / (s + rho)
    else:
        keep = s > linalg.rank_rtol(np.float64) * s.max()
        inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return ua @ (g * inv) @ ub.T


def _sym_power(a, p, eps):
    w, u = np.linalg.eigh(a)
    return (u * (np.clip(w, 0, None) + eps) ** p) @ u.T


def brute_shampoo(Jl, r, eps, exponent=0.25):
    n = Jl.shape[0]
    g = np.einsum("nckm,nc->km", Jl, r) / n
    if eps > 0:
        return _sym_power(g @ g.T, -exponent, eps) @ g @ _sym_power(g.T @ g, -exponent, eps)
    u, sv, vt = np.linalg.svd(g, full_matrices=False)
    keep = sv ** 2 > linalg.rank_rtol(np.float64) * sv[0] ** 2
    return (u[:, keep] * sv[keep] ** (1 - 4 * exponent)) @ vt[keep]


# ---------------------------------------------------------------- networks
def _mlp_case(c=2, loss="mse"):
    net = ng.mlp(3, 12, "relu", W_std=1.5, b_std=0.2, out_dim=c)
    r = np.random.RandomState(3)
    x = r.randn(6, 5)
    x[:, 0] = 0.0                 # an input coordinate that is zero on every sample: F = 0 there
    y = _targets(r, loss, 6, c)
    params = net.init_fn(jax.random.PRNGKey(1), (-1, 5))[1]
    return net, params, x, y


def _cnn_case(loss="mse", c=2):
    net = ng.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), stax.Erf(),
                    stax.Conv(5, (3, 3), strides=(2, 2), padding="VALID", b_std=0.2),
                    stax.Relu(), stax.GlobalAvgPool(), stax.Dense(c, b_std=0.2))
    r = np.random.RandomState(0)
    x = r.randn(3, 6, 6, 2)
    y = _targets(r, loss, 3, c)
    params = net.init_fn(jax.random.PRNGKey(2), x.shape)[1]
    return net, params, x, y


def _targets(r, loss, n, c):
    if loss == "ce":
        return np.eye(c)[r.randint(0, c, n)]
    if loss == "bce":
        return (r.rand(n, c) > 0.5).astype(float)
    return r.randn(n, c)


def _layer_dirs(net, d, idx):
    """[augmented (k+1, M)] per trainable layer from a direction pytree."""
    out = []
    for i in idx:
        W, b = d[i]
        out.append(np.concatenate([np.asarray(W).reshape(-1, W.shape[-1]),
                                   np.asarray(b).reshape(1, -1)]))
    return out


def _features(net, params, x, n, c):
    """The library's layer inputs h (N, S, k) and backprops (N, C, S, M), checked against the
    full Jacobian blocks (so the brute force's K-FAC factors rest on verified statistics)."""
    from ntkngd.methods import _layers
    K = ng.empirical_kernels(net, params, x)
    return [(np.asarray(h), np.asarray(d)) for h, d in _layers.layers(K)]


CASES = [("mlp", "mse"), ("mlp", "ce"), ("mlp", "bce"), ("cnn", "mse"), ("cnn", "ce")]


@pytest.mark.parametrize("arch,loss", CASES)
@pytest.mark.parametrize("rho", [1e-3, 0.0])
def test_diagonal_and_ekfac_equal_brute_force(arch, loss, rho):
    c = 1 if loss == "bce" else (3 if loss == "ce" and arch == "mlp" else 2)
    net, params, x, y = _mlp_case(c, loss) if arch == "mlp" else _cnn_case(loss, c)
    Js, r, H, idx = _brute(net, params, x, y, loss)
    feats = _features(net, params, x, x.shape[0], c)
    root = np.einsum("nij,nj,nkj->nik", *_eig_root(H))
    for (h, d), Jl in zip(feats, Js):
        assert np.abs(np.einsum("nsk,ncsm->nckm", h, d) - Jl).max() < 1e-12 * np.abs(Jl).max()
    for method in ("diagonal", "ekfac"):
        got = _layer_dirs(net, ng.ngd_direction(method, net, params, x, y, rho, loss=loss), idx)
        for l, (Jl, (h, d)) in enumerate(zip(Js, feats)):
            want = brute_diagonal(Jl, r, H, rho) if method == "diagonal" else \
                brute_ekfac(Jl, r, H, rho, h, np.einsum("ncd,ndsm->ncsm", root, d))
            err = np.linalg.norm(got[l] - want) / np.linalg.norm(want)
            assert err < TOL, (method, l, err)


def _eig_root(H):
    w, u = np.linalg.eigh(H)
    return u, np.sqrt(np.clip(w, 0, None)), u


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_shampoo_equals_brute_force(loss, eps):
    c = 3 if loss == "ce" else 2
    net, params, x, y = _mlp_case(c, loss)
    Js, r, _, idx = _brute(net, params, x, y, loss)
    got = _layer_dirs(net, ng.ngd_direction("shampoo", net, params, x, y, eps, loss=loss), idx)
    for l, Jl in enumerate(Js):
        want = brute_shampoo(Jl, r, eps)
        err = np.linalg.norm(got[l] - want) / np.linalg.norm(want)
        assert err < TOL, (l, err)
        if eps == 0:     # the polar factor: singular values exactly 1 on the gradient's range
            sv = np.linalg.svd(got[l], compute_uv=False)
            rank = int(np.sum(sv > 0.5))
            assert np.abs(sv[:rank] - 1).max() < 1e-12


def test_shampoo_half_exponent_and_wide_factored_route():
    """Exponent 1/2 (U diag(sigma / (sigma^2 + eps)) V^T) and the QR-factored SVD route (layer
    wider than the batch: width 40 > N = 6) against the dense brute force."""
    from ntkngd.methods import shampoo
    half = shampoo.method(0.5, "shampoo_half_test")
    net = ng.mlp(3, 40, "erf", b_std=0.3, out_dim=1)
    r = np.random.RandomState(1)
    x, y = r.randn(6, 8), r.randn(6, 1)
    params = net.init_fn(jax.random.PRNGKey(0), (-1, 8))[1]
    Js, res, _, idx = _brute(net, params, x, y, "mse")
    for m, e in ((half, 0.5), ("shampoo", 0.25)):
        for eps in (1e-3, 0.0):
            got = _layer_dirs(net, ng.ngd_direction(m, net, params, x, y, eps), idx)
            for l, Jl in enumerate(Js):
                want = brute_shampoo(Jl, res, eps, e)
                assert np.linalg.norm(got[l] - want) < TOL * np.linalg.norm(want)
    with pytest.raises(ValueError, match="exponent"):
        shampoo.method(0.7)


def test_shampoo_cnn_direction_matches_brute_force():
    net, params, x, y = _cnn_case("mse")
    Js, r, _, idx = _brute(net, params, x, y, "mse")
    got = _layer_dirs(net, ng.ngd_direction("shampoo", net, params, x, y, 0.0), idx)
    for l, Jl in enumerate(Js):
        want = brute_shampoo(Jl, r, 0.0)
        assert np.linalg.norm(got[l] - want) < TOL * np.linalg.norm(want)


# ---------------------------------------------------------------- function space
@pytest.mark.parametrize("method", ["diagonal", "ekfac"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_operator_moves_outputs_and_trace_identity(method, arch):
    """J d = G g for the finite-width operator (J d by jax.jvp), G' from the same formula on test
    points, and tr G = the number of non-zero preconditioner entries (alpha = count / (N C))."""
    net, params, x, y = _mlp_case(2) if arch == "mlp" else _cnn_case()
    xt = x[::-1][:2] + 0.1
    K = ng.empirical_kernels(net, params, x, xt)
    g = np.asarray(net.apply_fn(params, x) - y).reshape(-1)
    for rho in (0.0, 1e-3):
        op = ng.operator(method, K, rho)
        d = ng.ngd_direction(method, net, params, x, y, rho)
        jd = np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1]).reshape(-1)
        assert np.abs(op.train @ g - jd).max() < 1e-10 * np.abs(jd).max()
        jdt = np.asarray(jax.jvp(lambda p: net.apply_fn(p, xt), (params,), (d,))[1]).reshape(-1)
        assert np.abs(op.test @ g - jdt).max() < 1e-10 * np.abs(jdt).max()
        if rho == 0:
            count = int(op.notes[0].split(": ")[1].split()[0])
            assert abs(np.trace(op.train) - count) < 1e-9 * count


def test_shampoo_has_no_fixed_operator_and_is_scale_invariant():
    net, params, x, y = _mlp_case(2)
    with pytest.raises(ValueError, match="no fixed function-space operator"):
        ng.operator("shampoo", ng.empirical_kernels(net, params, x))
    f = np.asarray(net.apply_fn(params, x))
    a = ng.ngd_direction("shampoo", net, params, x, y, 0.0)
    b = ng.ngd_direction("shampoo", net, params, x, f + 3.0 * (y - f), 0.0)   # r -> 3 r
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.abs(np.asarray(u) - np.asarray(v)).max() < 1e-12 * np.abs(np.asarray(u)).max()


# ---------------------------------------------------------------- jit, optax, train
@pytest.mark.parametrize("method", ["diagonal", "ekfac", "shampoo"])
def test_jit_and_optax(method):
    net, params, x, y = _mlp_case(2)
    eager = ng.ngd_direction(method, net, params, x, y, 1e-4)
    jitted = jax.jit(lambda p, a, b: ng.ngd_direction(method, net, p, a, b, 1e-4))(params, x, y)
    for u, v in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
        assert np.abs(np.asarray(u) - np.asarray(v)).max() < 1e-10 * np.abs(np.asarray(u)).max()
    tx = optax.chain(ng.ngd_transform(method, net, 1e-4), optax.scale(-0.01))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        upd, s = tx.update(p, s, p, x=x, y=y)
        return optax.apply_updates(p, upd), s
    p1, _ = step(params, state)
    want = jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, params, eager)
    for u, v in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(want)):
        assert np.abs(np.asarray(u) - np.asarray(v)).max() < 1e-10 * np.abs(np.asarray(v)).max()


@pytest.mark.parametrize("method,loss", [("diagonal", "mse"), ("ekfac", "mse"), ("shampoo", "mse"),
                                         ("ekfac", "ce"), ("shampoo", "ce")])
def test_train(method, loss):
    """ng.train: the loss falls; diagonal / E-KFAC MSE at their operator's lr, Shampoo (and every
    method with cross-entropy) with the per-step alpha fit and deviation logged."""
    c = 3 if loss == "ce" else 1
    net, params, x, y = _mlp_case(c, loss)
    xt, yt = x[::-1] + 0.05, y[::-1]
    # undamped diagonal / E-KFAC with cross-entropy diverge at lr = 0.5 / alpha_fit: the
    # saturated softmax's small Hessian directions are inverted (their G is far from alpha I)
    rho = 1e-3 if loss == "ce" and method != "shampoo" else None
    log = ng.train(method, net, params, (x, y, xt, yt), steps=3, loss=loss, damping=rho)
    assert log.method == method and np.all(np.isfinite(log.train_loss))
    assert log.train_loss[-1] < log.train_loss[0]
    if method == "shampoo" or loss == "ce":
        assert len(log.alpha_fit) == 3 and np.all(np.isfinite(log.deviation))


def test_shampoo_has_no_infinite_width_prediction_and_the_log_says_why():
    """Shampoo's step is not linear in the residual, so it has no operator on any kernels, the
    infinite-width ones included: pred_inf_* are NaN for every loss and network (not only CNNs),
    and the log's notes name that condition (the empirical prediction stays finite)."""
    net, params, x, y = _mlp_case(1, "mse")
    log = ng.train("shampoo", net, params, (x, y, x[::-1] + 0.05, y[::-1]), steps=1)
    assert np.isnan(log.pred_inf_train_loss).all() and np.isnan(log.pred_inf_test_loss).all()
    assert np.all(np.isfinite(log.pred_emp_train_loss))
    why = [n for n in log.notes if n.startswith("no infinite-width prediction (pred_inf_* are NaN)")]
    assert len(why) == 1 and "shampoo has no fixed function-space operator" in why[0]
    assert why[0] in log.table()


def test_train_on_a_cnn():
    """ng.train on a CNN: diagonal / E-KFAC (MSE: finite-width operator's lr, no infinite-width
    prediction), Shampoo (per-step fit) and E-KFAC with cross-entropy (damped): the loss falls."""
    net, params, x, y = _cnn_case("mse", 1)
    data = (x, y, x[::-1] + 0.1, y[::-1])
    for method in ("diagonal", "ekfac", "shampoo"):
        log = ng.train(method, net, params, data, steps=2)
        assert log.train_loss[-1] < log.train_loss[0], method
        assert np.isnan(log.pred_inf_train_loss).all()
    net, params, x, y = _cnn_case("ce", 2)
    log = ng.train("ekfac", net, params, (x, y, x[::-1] + 0.1, y[::-1]), steps=2, loss="ce",
                   damping=1e-3)
    assert log.train_loss[-1] < log.train_loss[0] and np.isfinite(log.alpha_fit).all()


# ---------------------------------------------------------------- wide limits
def _iso_distance(a, b) -> float:
    """||G_a / alpha_a - G_b / alpha_b||_F / sqrt(m): distance of the normalized operators."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a * len(a) / np.trace(a) - b * len(b) / np.trace(b))
                 / np.sqrt(len(a)))


def _sphere(n, d, seed=0):
    x = np.random.RandomState(seed).randn(n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_diagonal_fisher_approaches_its_wide_limit(act):
    """The finite-width diagonal-Fisher operator G / alpha approaches the Monte-Carlo wide limit
    sum_l c_l E_l / alpha (methods.diagonal.wide_limit) as the width grows (3 widths x 3 seeds,
    fluctuations ~ M^{-1/2}: a 16x wider network is expected ~4x closer), far beyond the
    Monte-Carlo error; alpha = P_eff / (N C) exactly (trace identity)."""
    from ntkngd.methods import diagonal
    x = _sphere(8, 6)
    lim = diagonal.wide_limit(ng.analytic_kernels(ng.mlp(3, 64, act, b_std=0.1), x), 100000)
    means, mc = [], []
    for w in (64, 256, 1024):
        net = ng.mlp(3, w, act, b_std=0.1)
        g_inf, err = diagonal.combine(lim, diagonal.limit_counts(net, 6))
        mc.append(err)
        dists = []
        for seed in range(3):
            p = net.init_fn(jax.random.PRNGKey(seed), (-1, 6))[1]
            op = ng.operator("diagonal", ng.empirical_kernels(net, p, x), 0.0)
            dists.append(_iso_distance(op.train, g_inf))
            assert abs(op.alpha - int(op.notes[0].split(": ")[1].split()[0]) / 8) < 1e-9 * op.alpha
        means.append(np.mean(dists))
    assert means[0] > means[1] > means[2], means
    assert means[2] < 0.4 * means[0], means
    assert max(mc) < means[2] / 3, (mc, means)


@pytest.mark.parametrize("widths", [(64, 256, 1024),
                                    pytest.param((64, 512, 4096), marks=pytest.mark.slow)])
def test_ekfac_approaches_its_wide_limit(widths):
    """E-KFAC's finite-width operator approaches the same formula on infinite-width kernels
    (rotated Jacobians from the per-layer Grams; C = 1), alpha = (L - 2) N + min(N, d + 1) + 1
    at every width (trace identity with full-rank factors). Fluctuations ~ M^{-1/2}: a 16x wider
    network is expected ~4x closer (default widths), a 64x wider ~8x (slow widths)."""
    x = _sphere(8, 10)
    net0 = ng.mlp(3, 64, "relu", b_std=0.1)
    inf = ng.operator("ekfac", ng.analytic_kernels(net0, x), 0.0)
    assert inf.alpha == pytest.approx(8 + 8 + 1, rel=1e-12)
    means = []
    for w in widths:
        net = ng.mlp(3, w, "relu", b_std=0.1)
        dists = []
        for seed in range(3):
            p = net.init_fn(jax.random.PRNGKey(seed), (-1, 10))[1]
            op = ng.operator("ekfac", ng.empirical_kernels(net, p, x), 0.0)
            assert op.alpha == pytest.approx(17.0, rel=1e-12)
            dists.append(_iso_distance(op.train, inf.train))
        means.append(np.mean(dists))
    assert means[0] > means[1] > means[2] and means[2] < 0.6 * means[0], means


@pytest.mark.slow
def test_curvature_figure_tiny_profile(tmp_path):
    """`ntkngd figures --only curvature` (tiny profile, ~40 s): E-KFAC's alpha is its trace
    identity (L - 2) N + min(N, d + 1) + 1 = 17 at every width, the block patterns' deviation is
    exactly 0, the diagonal Fisher's alpha is within 20% of its Monte-Carlo limit at the widest
    width, and the training loss falls for every method but the diagonal Fisher (at width 64 its
    step at lr = 1/lambda_max(G) leaves the linear regime: 0.13 -> 0.43 -> 1.06 -> 0.22)."""
    import json
    from ntkngd import cli
    out = str(tmp_path)
    assert cli.main(["figures", "--profile", "tiny", "--out", out, "--no-progress",
                     "--only", "curvature"]) == 0
    res = json.load(open(f"{out}/curvature.json"))["results"]
    np.testing.assert_allclose(res["ekfac/alpha"], 17.0, rtol=1e-12)
    for m in ("exact", "block_diagonal", "kfac"):
        assert np.all(np.asarray(res[f"{m}/deviation"]) == 0.0)
    diag = np.median(np.asarray(res["diagonal/alpha"])[-1])
    assert abs(diag / res["diagonal/limit_alpha"][-1] - 1) < 0.2
    assert np.all(np.isfinite(res["train/diagonal/loss"]))
    for m in ("exact", "block_diagonal", "kfac", "unit_wise", "ekfac", "shampoo"):
        loss = np.asarray(res[f"train/{m}/loss"])
        assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]


def test_cli_picks_the_methods_up(capsys):
    from ntkngd import cli
    base = ["--data", "sphere", "--n-train", "6", "--n-test", "4", "--dim", "8", "--width", "32"]
    assert cli.main(["check", "--finite", "--methods", "diagonal", "ekfac", "shampoo"] + base) == 0
    out = capsys.readouterr().out
    assert "ekfac  alpha measured 13" in out          # (L - 2) N + min(N, d + 1) + 1, N = 6
    assert "shampoo  not available: shampoo has no fixed function-space operator" in out
    for m in ("diagonal", "e-kfac", "shampoo"):
        assert cli.main(["train", "--method", m, "--steps", "1"] + base) == 0
        assert "step" in capsys.readouterr().out
