"""Function-space operators: docs/theory.md's constants, one-step convergence, conditions, bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ntkngd as ng
from ntkngd.data import forster_transform
from ntkngd.methods import patterns
from ntkngd.methods.dual_solve import pattern_duals
from conftest import sphere_points


def btd_alpha_by_hand(L):
    T = np.eye(L) + np.eye(L, k=1) + np.eye(L, k=-1)
    return float(np.ones(L) @ np.linalg.pinv(T) @ np.ones(L))


def one_step_ratio(op, seed=0):
    """||(I - lr G) g|| / ||g|| for a random residual, with explicit matrices."""
    g = np.random.RandomState(seed).randn(op.size, 2)
    return np.linalg.norm(g - op.lr * op.train @ g) / np.linalg.norm(g)


@pytest.fixture(scope="module")
def kernels_by_depth():
    x = sphere_points(12, 20, seed=1)
    xt = sphere_points(5, 20, seed=2)
    return {L: ng.analytic_kernels(ng.mlp(L, 64, "relu", b_std=0.1), x, xt) for L in range(1, 9)}


@pytest.mark.parametrize("L", range(1, 9))
def test_block_methods_alpha_and_one_step(kernels_by_depth, L):
    K = kernels_by_depth[L]
    expected = {"exact": 1.0, "block_diagonal": float(L), "block_tridiagonal": btd_alpha_by_hand(L),
                "kfac": 12.0 * (L - 1) + 1}
    for method, alpha in expected.items():
        op = ng.operator(method, K)
        assert abs(op.alpha - alpha) < 1e-8 * alpha, (method, op.alpha, alpha)
        assert abs(op.alpha_theory - alpha) < 1e-8 * alpha
        assert op.deviation < 1e-8
        assert one_step_ratio(op) < 1e-8
        assert op.test.shape == (5, 12)


def test_btd_alpha_sequence_from_theory():
    # docs/theory.md: L = 1..7 -> 1, 1, 1, 2, 2, 2, 3 (T singular at L = 2, 5, 8)
    assert [round(ng.pattern_alpha(ng.tridiagonal_pattern(L).matrix), 12) for L in range(1, 8)] == \
        [1, 1, 1, 2, 2, 2, 3]


def test_general_patterns(kernels_by_depth):
    K = kernels_by_depth[4]
    for S in [np.eye(4), np.ones((4, 4)),
              np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]),
              np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]),
              np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 1, 1]])]:
        op = ng.operator(ng.block_pattern(S), K)
        alpha = float(np.ones(4) @ np.linalg.pinv(S) @ np.ones(4))
        assert abs(op.alpha - alpha) < 1e-8 * alpha and op.deviation < 1e-8
        assert one_step_ratio(op) < 1e-8


def test_singular_patterns_use_parameter_space_min_norm(kernels_by_depth):
    # exact NGD written as the pattern S = 1 1^T on layer blocks (general path, singular S)
    K = kernels_by_depth[3]
    blocks, tblocks = np.asarray(K.blocks_train), np.asarray(K.blocks_test)
    v, _ = pattern_duals(blocks, np.ones((3, 3)), K.n_train, 0.0, np.eye(K.n_train))
    test_pattern = np.einsum("lij,ljk->ik", tblocks, v)
    exact = ng.operator("exact", K).test
    assert np.max(np.abs(test_pattern - exact)) < 1e-8 * np.max(np.abs(exact))
    # the plain pseudo-inverse of the dual matrix (minimum-||v||) would be wrong on test points
    big = np.block([[blocks[j] for j in range(3)] for _ in range(3)])
    v_bad = (np.linalg.pinv(big) @ np.tile(np.eye(K.n_train), (3, 1))).reshape(3, K.n_train, -1)
    assert np.max(np.abs(np.einsum("lij,ljk->ik", tblocks, v_bad) - exact)) > 1e-3 * np.abs(exact).max()
    # BTD at L = 2 is exact NGD, on test points too
    K2 = kernels_by_depth[2]
    v2, _ = pattern_duals(np.asarray(K2.blocks_train), patterns.tridiagonal(2).matrix, K2.n_train,
                          0.0, np.eye(K2.n_train))
    np.testing.assert_allclose(np.einsum("lij,ljk->ik", np.asarray(K2.blocks_test), v2),
                               ng.operator("exact", K2).test, rtol=1e-8, atol=1e-10)


def test_damped_btd_converges_linearly_to_the_limit(kernels_by_depth):
    K = kernels_by_depth[5]   # T singular at L = 5
    limit = ng.operator("block_tridiagonal", K)
    assert abs(limit.alpha - 2.0) < 1e-8
    errs = []
    for rho in [1e-5, 1e-6, 1e-7]:
        op = ng.operator("block_tridiagonal", K, damping=rho)
        errs.append(np.max(np.abs(op.test - limit.test)) / np.max(np.abs(limit.test)))
    assert errs[2] < errs[1] < errs[0]
    np.testing.assert_allclose(errs[0] / errs[1], 10, rtol=0.1)   # linear in rho
    np.testing.assert_allclose(errs[1] / errs[2], 10, rtol=0.1)


def test_damping_reduces_alpha_monotonically(kernels_by_depth):
    K = kernels_by_depth[3]
    alphas = [ng.operator("exact", K, damping=r).alpha for r in [0.0, 1e-4, 1e-2, 1.0]]
    assert alphas[0] > alphas[1] > alphas[2] > alphas[3] > 0
    # exact NGD with damping: G = Theta (Theta + N rho)^{-1}
    th = np.asarray(K.ntk_train)
    G = th @ np.linalg.inv(th + 12 * 1e-2 * np.eye(12))
    np.testing.assert_allclose(ng.operator("exact", K, damping=1e-2).train, G, atol=1e-12)


def test_gd_operator_is_ntk_over_n(kernels_by_depth):
    K = kernels_by_depth[3]
    op = ng.operator("gd", K)
    np.testing.assert_allclose(op.train, np.asarray(K.ntk_train) / 12, rtol=1e-14)
    assert op.alpha_theory is None and op.deviation > 0.1
    assert abs(op.lr - 1 / op.spectrum[0]) < 1e-12


def test_kfac_few_inputs_is_reported_and_forster_restores_isotropy():
    N, d = 40, 20
    x = np.random.RandomState(0).randn(N, d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    net = ng.mlp(3, 64, "relu", b_std=0.0)
    with pytest.warns(ng.TheoryConditionWarning, match="rank 20 < N = 40"):
        op = ng.operator("kfac", ng.analytic_kernels(net, x))
    assert op.alpha_theory is None
    assert not op.conditions["N <= d (first-layer input Gram invertible)"]
    assert op.deviation > 1e-2
    rep = ng.isotropy(op)
    assert not rep.isotropic and rep.deviation == op.deviation
    # docs/theory.md: the first layer contributes N diag(P_X): diagonal, not isotropic
    off = op.train - np.diag(np.diag(op.train))
    assert np.max(np.abs(off)) < 1e-10 * op.alpha
    q1 = np.asarray(ng.analytic_kernels(net, x).fwd_train[0])
    P = q1 @ np.linalg.pinv(q1, rcond=1e-10, hermitian=True)
    np.testing.assert_allclose(np.diag(op.train), N * np.diag(P) + N + 1, rtol=1e-9)
    xf = forster_transform(x)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op_f = ng.operator("kfac", ng.analytic_kernels(net, xf))
    # in isotropic position: a note, not the advice to apply the transform that was just applied
    assert not any("forster_transform" in str(w.message) for w in caught)
    assert any("isotropic position (diag(P_X) constant)" in n for n in op_f.notes)
    # docs/theory.md: the first layer then contributes d: alpha = 20 + 40 + 1 = 61
    assert abs(op_f.alpha - 61.0) < 1e-6 and op_f.deviation < 1e-8


def test_unit_wise_training_operator():
    x = sphere_points(10, 20)
    for act, gamma in [("relu", 0.5), ("erf", 1.0)]:
        for C in [1, 2]:
            net = ng.mlp(3, 2048, act, out_dim=C)
            op = ng.operator("unit_wise", ng.analytic_kernels(net, x))
            assert op.alpha == pytest.approx(gamma * 2 * 2048 / C + 1, rel=1e-12)
            assert op.test is None
    with pytest.raises(ValueError, match="damping"):
        ng.operator("unit_wise", ng.analytic_kernels(ng.mlp(2, 8), x), damping=1e-3)


_PROPERTY = dict(L=st.integers(1, 6), n=st.integers(2, 10), extra_d=st.integers(0, 6),
                 act=st.sampled_from(["relu", "erf"]), bias=st.booleans(),
                 seed=st.integers(0, 10))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROPERTY)
def test_isotropy_property(L, n, extra_d, act, bias, seed):
    """alpha of exact, BD, BTD and K-FAC (N <= d) equals the theory's, and one step at lr =
    1/alpha converges, on random depths, sizes, activations and biases (8 draws; 60 under
    `make test-slow`)."""
    _check_isotropy(L, n, extra_d, act, bias, seed)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROPERTY)
def test_isotropy_property_many_draws(L, n, extra_d, act, bias, seed):
    _check_isotropy(L, n, extra_d, act, bias, seed)


def _check_isotropy(L, n, extra_d, act, bias, seed):
    d = n + extra_d
    x = sphere_points(n, d, seed)
    K = ng.analytic_kernels(ng.mlp(L, 16, act, b_std=0.3 if bias else 0.0), x)
    for method, alpha in [("exact", 1.0), ("bd", L), ("btd", btd_alpha_by_hand(L)),
                          ("kfac", n * (L - 1) + 1.0)]:
        op = ng.operator(method, K)
        assert abs(op.alpha - alpha) < 1e-8 * alpha, (method, op.alpha, alpha)
        assert one_step_ratio(op, seed) < 1e-7


def test_bad_input_errors(kernels_by_depth):
    K = kernels_by_depth[3]
    with pytest.raises(ValueError, match="unknown method 'newton'"):
        ng.operator("newton", K)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        ng.operator("exact", K, damping=-1e-3)
    with pytest.raises(ValueError, match="symmetric"):
        ng.block_pattern([[1, 1, 0], [0, 1, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="0 or 1"):
        ng.block_pattern([[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="diagonal"):
        ng.block_pattern([[0, 1], [1, 1]])
    with pytest.raises(ValueError, match="square"):
        ng.block_pattern(np.ones((2, 3)))
    with pytest.raises(ValueError, match="network has 3 layers"):
        ng.operator(ng.block_pattern(np.eye(2)), K)
    with pytest.raises(TypeError, match="Kernels"):
        ng.operator("exact", np.eye(3))


def test_default_damping_is_zero_on_infinite_width(kernels_by_depth):
    K = kernels_by_depth[3]
    for m in ["exact", "kfac", "unit_wise"]:
        assert ng.operator(m, K, damping=None).damping == 0.0


def test_unit_wise_alpha_for_several_outputs_matches_finite_width():
    """C > 1 (open in docs/theory.md): each hidden unit projects, per sample, onto one direction of the
    C-dim output space, so tr G = N (gamma sum M_l + C) and alpha = gamma sum M_l / C + 1; the
    deviation from isotropy (directions not exactly isotropic) shrinks with width."""
    import jax
    x = sphere_points(12, 30, seed=4)
    devs = {}
    for act in ["erf", "relu"]:
        for C in [2, 3]:
            for width in [128, 1024]:
                net = ng.mlp(3, width, act, out_dim=C)
                params = net.init_fn(jax.random.PRNGKey(C), (-1, 30))[1]
                op = ng.operator("unit_wise", ng.empirical_kernels(net, params, x), damping=0.0)
                pred = ng.methods.unitwise.predicted_alpha(net)
                tol = 1e-9 if act == "erf" else 0.05      # relu: active fraction fluctuates
                assert abs(op.alpha - pred) < tol * pred, (act, C, width, op.alpha, pred)
                devs[act, C, width] = op.deviation
    for act in ["erf", "relu"]:
        for C in [2, 3]:
            assert devs[act, C, 1024] < devs[act, C, 128]


def test_shared_layer_solves_equal_the_dual_vectors(kernels_by_depth):
    # BD and BTD at rho = 0 (nonsingular S, PD blocks) reuse cached solves Theta_l^{-1}[Theta_l,
    # Theta_l'^T]; they must equal the operator built from pattern_duals' dual vectors (rhs = I)
    K = kernels_by_depth[3]
    blocks, tblocks = np.asarray(K.blocks_train), np.asarray(K.blocks_test)
    for name, S in [("block_diagonal", np.eye(3)),
                    ("block_tridiagonal", patterns.tridiagonal(3).matrix)]:
        v, notes = pattern_duals(blocks, S, K.n_train, 0.0, np.eye(K.n_train))
        assert notes == []
        op = ng.operator(name, K)
        np.testing.assert_allclose(op.train, np.einsum("lij,ljk->ik", blocks, v), rtol=0,
                                   atol=1e-10 * np.abs(op.train).max())
        np.testing.assert_allclose(op.test, np.einsum("lij,ljk->ik", tblocks, v), rtol=0,
                                   atol=1e-10 * np.abs(op.test).max())
