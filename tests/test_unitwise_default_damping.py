"""Unit-wise NGD uses one default damping, `methods.unitwise.default_damping(K)`, through every
entry point: ng.operator(damping=None), ng.ngd_direction, ng.train and the CLI's train and check."""
import re

import jax
import numpy as np
import pytest

import ntkngd as ng
from ntkngd import cli
from ntkngd.methods.unitwise import default_damping


@pytest.fixture(scope="module")
def small():
    ds = ng.data.digits(n_train=10, n_test=10, classes=(0, 1))
    net = ng.mlp(3, 64, "relu")
    params = net.init_fn(jax.random.PRNGKey(0), (-1, ds.input_dim))[1]
    K = ng.empirical_kernels(net, params, ds.x_train, ds.x_test)
    return ds, net, params, K


def test_library_entry_points_share_the_default(small):
    ds, net, params, K = small
    rho = default_damping(K)
    assert rho > 0
    assert ng.operator("unit_wise", K).damping == rho                     # damping omitted
    assert ng.operator("unit_wise", K, damping=None).damping == rho
    assert ng.operator("exact", K).damping == 0.0                          # others: rho -> 0
    log = ng.train("unit_wise", net, params, (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
                   steps=1)
    assert log.damping == rho
    d_default = ng.ngd_direction("unit_wise", net, params, ds.x_train, ds.y_train)
    d_rho = ng.ngd_direction("unit_wise", net, params, ds.x_train, ds.y_train, damping=rho)
    # damping=None is resolved on device inside the jitted update, the explicit rho on the host:
    # the same rule, equal up to the last bits of the mean (the solves amplify that to ~1e-13).
    for a, b in zip(jax.tree_util.tree_leaves(d_default), jax.tree_util.tree_leaves(d_rho)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=0)


def test_cli_train_and_check_use_the_same_default(small, capsys, monkeypatch):
    ds, net, params, K = small
    rho = default_damping(ng.empirical_kernels(net, params, ds.x_train))
    argv = ["--n-train", "10", "--n-test", "10", "--width", "64", "--seed", "0"]
    assert cli.main(["train", "--method", "unit_wise", "--steps", "1", *argv]) == 0
    shown = float(re.search(r"unit_wise: lr \S+, damping (\S+),", capsys.readouterr().out)[1])
    assert shown == pytest.approx(rho, rel=5e-3)           # printed with 3 significant digits
    used = []
    real = ng.operator

    def spy(method, kernels, damping=None):
        op = real(method, kernels, damping)
        used.append((method, kernels.kron_outputs, op.damping))
        return op
    monkeypatch.setattr(ng, "operator", spy)
    assert cli.main(["check", "--finite", "--methods", "unit_wise", "exact", *argv]) == 0
    finite = {m: d for m, kron, d in used if not kron}
    assert finite["unit_wise"] == pytest.approx(rho, rel=1e-12) and finite["exact"] == 0.0
