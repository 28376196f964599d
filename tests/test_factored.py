"""The analytic pipeline's shortcuts against the plain computations they replace: G = alpha I set
exactly for positive-definite blocks, G' kept as Cholesky factors (FactoredMatrix), K-FAC's
identity/projector parts, iterated discrete predictions and the Lanczos step size (float64)."""
import warnings

import numpy as np
import pytest

import ntkngd as ng
from conftest import sphere_points
from ntkngd.dynamics.linear import LANCZOS_MIN_SIZE, FactoredMatrix, dense


@pytest.fixture(scope="module")
def kernels():
    x, xt = sphere_points(300, 12, 0), sphere_points(40, 12, 1)   # N > d: K-FAC anisotropic
    return ng.analytic_kernels(ng.mlp(3, 64, "relu", b_std=0.1), x, xt)


def _layer_test(K, S):
    """G' = sum_l c_l Theta_l(X', X) Theta_l^{-1} by dense numpy solves (c = S^{-1} 1)."""
    blocks, tests = np.asarray(K.blocks_train), np.asarray(K.blocks_test)
    c = np.linalg.solve(S, np.ones(len(S)))
    return sum(ci * np.linalg.solve(b, t.T).T for ci, b, t in zip(c, blocks, tests))


@pytest.mark.parametrize("method,S", [("exact", None), ("block_diagonal", np.eye(3)),
                                      ("block_tridiagonal", ng.tridiagonal_pattern(3).matrix)])
def test_pattern_operator_equals_dense_solves(kernels, method, S):
    K = kernels
    op = ng.operator(method, K)
    assert isinstance(op.test, FactoredMatrix)
    if S is None:   # exact NGD: the total NTK
        theta, theta_t = np.asarray(K.ntk_train), np.asarray(K.ntk_test)
        want_test, alpha = np.linalg.solve(theta, theta_t.T).T, 1.0
        want_train = theta @ np.linalg.inv(theta)   # what was computed before: I + round-off
    else:
        want_test = _layer_test(K, S)
        alpha = float(np.ones(3) @ np.linalg.solve(S, np.ones(3)))
        want_train = sum(c * b @ np.linalg.inv(b) for c, b in zip(
            np.linalg.solve(S, np.ones(3)), np.asarray(K.blocks_train)))
    # G = alpha I is set by construction (no solve): check the construction, then the constant.
    # alpha = 1^T S^+ 1 goes through an SVD of S: eps x cond(S) x L of round-off.
    assert op.is_scaled_identity and op.deviation == 0.0
    cond = np.linalg.cond(S) if S is not None else 1.0
    assert op.alpha == pytest.approx(alpha, rel=8 * np.finfo(float).eps * cond * 3)
    np.testing.assert_allclose(op.train, want_train, atol=1e-8 * alpha)
    g = np.random.RandomState(0).randn(300, 2)
    scale = np.abs(want_test).max()
    np.testing.assert_allclose(op.test @ g, want_test @ g, rtol=0, atol=1e-10 * scale * 300)
    np.testing.assert_allclose((0.5 * op.test) @ g[:, 0], 0.5 * want_test @ g[:, 0], rtol=0,
                               atol=1e-10 * scale * 300)
    np.testing.assert_allclose(dense(op.test), want_test, rtol=0, atol=1e-10 * scale)
    assert (op.test @ g).shape == (40, 2) and op.test.shape == (40, 300) and len(op.test) == 40


def test_kfac_parts_equal_the_dense_products(kernels):
    """G = N sum_l (Q_l Q_l^+) o (B_l B_l^+) with every product formed by pinv (no shortcut)."""
    K = kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        op = ng.operator("kfac", K)
    n = K.n_train
    rc = 1e-10
    train = test = 0
    for q, b, qt, bt in zip(*(np.asarray(a) for a in (K.fwd_train, K.bwd_train, K.fwd_test,
                                                       K.bwd_test))):
        qp, bp = np.linalg.pinv(q, rcond=rc, hermitian=True), np.linalg.pinv(b, rcond=rc,
                                                                             hermitian=True)
        train = train + n * (q @ qp) * (b @ bp)
        test = test + n * (qt @ qp) * (bt @ bp)
    assert op.conditions["N <= d (first-layer input Gram invertible)"] is False
    np.testing.assert_allclose(op.train, train, rtol=0, atol=1e-8 * n)
    np.testing.assert_allclose(dense(op.test), test, rtol=0, atol=1e-7 * np.abs(test).max())


@pytest.mark.parametrize("method", ["gd", "kfac"])
def test_iterated_predictions_equal_the_eigendecomposition(kernels, method):
    K = kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        op = ng.operator(method, K)
        twin = ng.operator(method, K)
    rng = np.random.RandomState(1)
    y, f0, f0t = np.sign(rng.randn(300, 1)) / 2, 0.1 * rng.randn(300, 1), 0.1 * rng.randn(40, 1)
    iterated = ng.predict(op, f0, y, f0t, steps=[0, 1, 7, 30])
    twin.eig   # a cached decomposition switches predict to the closed form
    closed = ng.predict(twin, f0, y, f0t, steps=[0, 1, 7, 30])
    np.testing.assert_allclose(iterated.train, closed.train, rtol=0, atol=1e-11)
    np.testing.assert_allclose(iterated.test, closed.test, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["gd", "kfac"])
def test_lanczos_step_size_equals_the_full_spectrum(kernels, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.TheoryConditionWarning)
        op = ng.operator(method, kernels)
    assert op.size >= LANCZOS_MIN_SIZE and op.deviation > 1e-6
    lam = np.linalg.eigvalsh(0.5 * (op.train + op.train.T))[-1]
    assert op.lr == pytest.approx(1.0 / lam, rel=1e-12)
    assert op.spectrum[0] == pytest.approx(lam, rel=1e-12)
