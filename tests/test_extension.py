"""Adding an approximation or a loss is one registration: a toy method (the last two layers merged
into one Fisher block) and a toy loss defined here run through operator, predict, isotropy,
ngd_direction, train (every loss), the CLI and the figures' styles, with no other edit."""
from __future__ import annotations

import json
import os
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd import cli, figures, losses, methods  # noqa: E402
from ntkngd.figures import common  # noqa: E402

N, NT, D, L = 8, 4, 12, 4


def merged_last(depth: int) -> np.ndarray:
    """Layers 1..L-2 alone, layers L-1 and L one block: alpha = 1^T S^+ 1 = L - 1."""
    S = np.eye(depth)
    S[-2:, -2:] = 1.0
    return S


def _double_mse_value(f, y):
    return jnp.sum((jnp.asarray(f) - y) ** 2, axis=(-2, -1)) / f.shape[-2]


DOUBLE_MSE = losses.Loss(      # Loss = (1/N) sum ||f - y||^2: r = 2 (f - y), H = 2 I, H^+ r = f - y
    "double_mse", _double_mse_value, lambda f, y: 2 * (f - y),
    lambda f: 2 * jnp.broadcast_to(jnp.eye(f.shape[1], dtype=f.dtype), f.shape + (f.shape[1],)),
    lambda f, y: f - y, lambda c: np.eye(c), losses.mse.validate, losses.mse.accuracy,
    lambda f, r: r / 2)


@pytest.fixture(autouse=True)
def toy():
    ng.register_method(ng.pattern_method("merged_last", merged_last), "ml")
    ng.register_loss(DOUBLE_MSE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        yield
    methods.REGISTRY.pop("merged_last")
    methods.ALIASES.pop("ml")
    losses.LOSSES.pop("double_mse")


def _setup(c=1, ce=False, width=64):
    rs = np.random.RandomState(0)
    x = rs.randn(N + NT, D)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.eye(c)[rs.randint(0, c, N + NT)] if ce else 0.5 * np.sign(rs.randn(N + NT, c))
    net = ng.mlp(L, width, "relu", b_std=0.1, out_dim=c)
    params = net.init_fn(jax.random.PRNGKey(0), (-1, D))[1]
    return net, params, x[:N], y[:N], x[N:], y[N:]


def _jvp(net, params, d, x):
    return np.asarray(jax.jvp(lambda p: net.apply_fn(p, x), (params,), (d,))[1])


def test_operator_predict_isotropy():
    net, params, x, y, xt, yt = _setup()
    K = ng.analytic_kernels(net, x, xt)
    op = ng.operator("merged_last", K)
    assert op.alpha_theory == pytest.approx(L - 1) and abs(op.alpha - (L - 1)) < 1e-8
    rep = ng.isotropy(op)
    assert rep.isotropic and rep.method == "merged_last"
    f0 = np.asarray(net.apply_fn(params, x))
    traj = ng.predict(op, f0, y, np.asarray(net.apply_fn(params, xt)), steps=1, y_test=yt)
    assert traj.train_loss[1] < 1e-20 * traj.train_loss[0]
    assert ng.operator("ml", K).alpha == pytest.approx(op.alpha, rel=1e-14)
    ce = ng.operator("merged_last", ng.analytic_kernels(ng.mlp(L, 64, out_dim=3), x), loss="ce")
    assert ce.alpha == pytest.approx(L - 1)
    rep_ce = ng.isotropy(ce)
    assert rep_ce.isotropic and abs(rep_ce.alpha - (L - 1)) < 1e-8


@pytest.mark.parametrize("loss,c", [("mse", 2), ("ce", 3), ("bce", 1)])
def test_direction_and_train_every_loss(loss, c):
    net, params, x, y, xt, yt = _setup(c, ce=loss == "ce")
    if loss == "bce":
        y, yt = (y > 0).astype(float), (yt > 0).astype(float)
    K = ng.empirical_kernels(net, params, x, xt)
    f = net.apply_fn(params, x)
    op = ng.operator("merged_last", K, 1e-3, loss=loss)
    d = ng.ngd_direction("merged_last", net, params, x, y, 1e-3, loss=loss)
    if loss == "mse":
        want = op.train @ (np.asarray(f) - y).reshape(-1)
    else:
        want = np.asarray(op.from_targets(f, y)[0]).reshape(-1)
    np.testing.assert_allclose(_jvp(net, params, d, x).reshape(-1), want,
                               atol=1e-9 * np.abs(want).max())
    log = ng.train("merged_last", net, params, (x, y, xt, yt), steps=2, loss=loss)
    assert log.method == "merged_last" and log.train_loss[2] < log.train_loss[0]


def test_toy_loss_through_the_engine():
    """double_mse has H = 2 I and H^+ r = f - y: exact NGD takes the MSE exact-NGD step."""
    net, params, x, y, xt, yt = _setup()
    a = ng.ngd_direction("exact", net, params, x, y, loss="double_mse")
    b = ng.ngd_direction("exact", net, params, x, y, loss="mse")
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-13)
    log = ng.train("merged_last", net, params, (x, y, xt, yt), steps=1, loss="double_mse")
    assert log.train_loss[1] < log.train_loss[0]


def test_cli_and_figure_styles(capsys):
    base = ["--data", "sphere", "--n-train", "8", "--n-test", "4", "--dim", "16", "--depth",
            str(L), "--width", "64"]
    assert cli.main(["check", "--methods", "merged_last", "exact"] + base) == 0
    out = capsys.readouterr().out
    assert "merged_last" in out and f"predicted {L - 1}" in out
    assert cli.main(["train", "--method", "merged_last", "--steps", "1"] + base) == 0
    assert "merged_last" in capsys.readouterr().out
    assert common.COLORS["merged_last"] not in [common.COLORS[m] for m in common.BUILTIN_METHODS]
    assert isinstance(common.MARKERS["merged_last"], str) and common.LABELS["merged_last"]


METHOD_FIGURES = ("convergence", "lr_sweep", "width_gap", "spectra", "test_functions",
                  "cross_entropy")


def test_figures_draw_the_registered_method(tmp_path, monkeypatch):
    """Every figure that loops over methods picks the toy method up; a tiny test-function figure
    (registry cut to exact NGD and the toy, one step) computes it, keys its cache by it and saves
    its numbers: alpha = L - 1 of the merged pattern at the profile's depth, and the same initial
    test loss as exact NGD (same network and data)."""
    assert list(common.METHOD_ORDER) == list(common.BUILTIN_METHODS) + ["merged_last"]
    drawn = {n for n in figures.available() if figures.draws_methods(n)}
    assert set(METHOD_FIGURES) <= drawn and "btd_depth" not in drawn
    monkeypatch.setattr(methods, "REGISTRY", {k: methods.REGISTRY[k]
                                              for k in ("exact", "merged_last")})
    assert tuple(common.METHOD_ORDER) == ("exact", "merged_last")
    prof = figures.get("tiny", steps=1)
    out = str(tmp_path)
    assert figures.run(["test_functions"], prof, out, log=lambda *_: None) == \
        {"test_functions": "computed"}
    with open(os.path.join(out, "test_functions.json")) as fh:
        saved = json.load(fh)
    assert list(saved["config"]["methods"]) == ["merged_last"]
    res = saved["results"]
    assert res["merged_last/lr"] == pytest.approx(1.0 / (prof.depth - 1), rel=1e-8)
    assert res["merged_last/test_loss"][0] == pytest.approx(res["exact/test_loss"][0], rel=1e-12)
    assert np.all(np.isfinite(res["merged_last/theory_test_loss"]))
    assert res["merged_last/train_loss"][1] < res["merged_last/train_loss"][0]


PLUGIN = """import numpy as np
import ntkngd as ng


def first_two(depth):
    S = np.eye(depth)
    S[:2, :2] = 1.0
    return S


ng.register_method(ng.pattern_method("plugin_first_two", first_two))
"""


def test_cli_plugin_registers_a_method(tmp_path, capsys):
    """`ntkngd --plugin FILE.py`: a method registered in a user's file is a choice of check and
    train (first two layers merged, L = 4: alpha = 1^T S^+ 1 = 3)."""
    path = tmp_path / "my_method.py"
    path.write_text(PLUGIN)
    base = ["--data", "sphere", "--n-train", "8", "--n-test", "4", "--dim", "16", "--depth",
            str(L), "--width", "64"]
    try:
        assert cli.main(["--plugin", str(path), "check", "--methods", "plugin_first_two"]
                        + base) == 0
        out = capsys.readouterr().out
        assert "plugin_first_two" in out and f"predicted {L - 1}" in out
        assert "plugin_first_two" in common.METHOD_ORDER
    finally:
        methods.REGISTRY.pop("plugin_first_two", None)
    assert cli.main(["--plugin", str(tmp_path / "missing.py"), "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkngd: error: --plugin") and "no such file" in err
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('broken plugin')\n")
    assert cli.main(["--plugin", str(bad), "check"]) == 2
    assert "RuntimeError: broken plugin" in capsys.readouterr().err


def test_pattern_duals_with_a_generic_vjp_pullback():
    """A block-pattern method needs only the kernel blocks and a per-layer pullback: J_l^T v_l by
    jax.vjp of the whole network (any architecture) equals the MLP engine's direction."""
    net, params, x, y, _, _ = _setup(2)
    K = ng.empirical_kernels(net, params, x)
    f = net.apply_fn(params, x)
    for name in ("block_tridiagonal", "merged_last", "gd"):
        v = ng.get_method(name).duals(K, 0.0, f, jnp.asarray(y), losses.mse)    # (L, N C)
        _, pull = jax.vjp(lambda p: net.apply_fn(p, x), params)
        ref = ng.ngd_direction(name, net, params, x, y, 0.0)
        for layer in range(L):
            got = pull(v[layer].reshape(N, 2))[0][2 * layer]
            for a, b in zip(got, ref[2 * layer]):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
