"""K-FAC's first-layer note with N > d: a warning only when the inputs are not in isotropic position."""
import warnings

import jax
import numpy as np
import pytest

import ntkngd as ng
from ntkngd import cli


def _operator(x):
    net = ng.mlp(2, 256)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op = ng.operator("kfac", ng.empirical_kernels(net, params, x))
    return op, [str(w.message) for w in caught]


def test_inputs_in_isotropic_position_give_a_note_not_a_warning():
    """Rows +-e_i (unit norm), each twice: X^T X = (N/d) I, diag(P_X) = d/N for every point."""
    d = 4
    x = np.concatenate([np.eye(d), -np.eye(d)])            # N = 8 > d = 4
    op, caught = _operator(x)
    assert not any("first-layer input Gram" in w for w in caught)
    assert any("isotropic position (diag(P_X) constant)" in n and "contributes 4 I" in n
               for n in op.notes)


def test_inputs_off_isotropic_position_keep_the_warning():
    x = np.random.default_rng(0).normal(size=(8, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, caught = _operator(x)
    assert any("put the inputs in isotropic position" in w for w in caught)


def test_cli_rewrites_the_advice_once_forster_was_applied():
    msg = ("K-FAC: the first-layer input Gram has rank 50 < N = 80 (...): the first layer "
           "contributes N diag(P_X), diagonal but not isotropic; put the inputs in isotropic "
           "position (ntkngd.data.forster_transform) to make it constant")
    pre = "unit-norm rows + Forster in the rank-50 span (100 iterations, isotropy error 0.054)"
    out = cli._forster_aware(msg, pre)
    assert "put the inputs" not in out and "--forster was applied" in out
    assert "isotropy error 0.054" in out
    assert cli._forster_aware(msg, "unit-norm rows") == msg
