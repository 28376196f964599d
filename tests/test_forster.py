"""Forster's transform iterates on the rows (no multiplied-up d x d matrix): on the digits 0 vs 1
it never collapses rows, reaches isotropy in the span the points share, maps test points with
the same steps, and does not depend on the BLAS thread count."""
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ntkngd import data
from ntkngd.data.forster import ForsterMap, forster_fit, forster_transform


def _fit(ds, threads):
    with threadpool_limits(threads, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = data.forster_dataset(ds, iters=100, span=True)
        fmap = forster_fit(ds.x_train, iters=100, span=True)
    return out, fmap


# (N, input rank, rank of the isotropic span, rows owning private directions)
@pytest.mark.parametrize("n,rank,iso_rank,owners", [(100, 51, 49, 2), (120, 51, 50, 1),
                                                    (260, 52, 49, 6)])
def test_digits_forster_no_collapse_isotropic_and_thread_independent(n, rank, iso_rank, owners):
    ds = data.digits(n_train=n, n_test=50, classes=(0, 1), seed=0)
    one, fmap = _fit(ds, 1)
    two, _ = _fit(ds, 2)
    assert fmap.input_rank == rank and fmap.rank == iso_rank and len(fmap.deflated) == owners
    # no row shrinks towards round-off before a normalisation (the old product collapsed 98 of
    # 100 rows below 1e-12 of the largest)
    assert fmap.min_row_ratio > 0.1
    err, r = data.span_isotropy_error(one.x_train)
    assert r == iso_rank and err < 1e-7          # N = 120 converges slowly: 5.9e-8 after 100
    # every step has condition number <= sqrt(N / min eigenvalue) ~ 1e3 here, so round-off
    # stays ~ 1e3 eps per step; thread counts change only the summation order
    for a, b in ((one.x_train, two.x_train), (one.x_test, two.x_test)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    # the test points get the same steps as the training rows
    np.testing.assert_allclose(fmap.apply(ds.x_train), one.x_train, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(one.x_test, axis=1), 1.0, rtol=0, atol=1e-12)


def test_private_direction_is_certified_and_removed():
    """Nine Gaussian points in R^3 and one point with a private 4th coordinate: isotropy in R^4
    would need 10/4 = 2.5 of that point's unit norm in its own direction, so no isotropic
    position exists; the fit removes the direction and reaches isotropy in R^3."""
    rng = np.random.default_rng(3)
    x = np.zeros((10, 4))
    x[:9, :3] = rng.standard_normal((9, 3))
    x[9] = [0.3, -0.2, 0.5, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fmap = forster_fit(x, span=True)
        z = forster_transform(x, span=True)
    assert fmap.deflated == (9,) and fmap.rank == 3 and fmap.input_rank == 4
    assert data.span_isotropy_error(z, 3)[0] < 1e-9
    assert np.allclose(z[:, 3], 0.0, atol=1e-12)       # the private coordinate is gone
    # without the removal the iteration would amplify round-off in the private coordinate of the
    # other rows by sqrt(2.5) per step (O(1) after 131 steps): refused
    with pytest.raises(ValueError, match=r"no isotropic position in R\^4: rows \[9\] alone span 1"):
        forster_transform(x)


def test_forster_map_rejects_wrong_inputs():
    x = np.random.default_rng(0).standard_normal((12, 3))
    fmap = forster_fit(x)
    assert isinstance(fmap, ForsterMap) and fmap.rank == 3
    with pytest.raises(ValueError, match=r"\(N, 3\) array"):
        fmap.apply(np.ones((2, 4)))
    with pytest.raises(TypeError, match="ForsterMap"):
        data.forster_apply(x, np.eye(3))


@pytest.mark.parametrize("smallest", [1e-8, 1e-10])
def test_ill_conditioned_full_rank_rows_are_not_called_singular(smallest):
    """Rows of full rank 30 with singular values down to `smallest` (relative): above the rank cut
    max(N, d) eps, so the step must not call X^T X singular (the old eigenvalue test on X^T X
    squared the condition number and refused these), and the iteration reaches isotropy."""
    x = np.random.RandomState(0).randn(40, 30) * np.logspace(0, np.log10(smallest), 30)
    fmap = forster_fit(x)
    z = fmap.apply(x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-12)
    assert fmap.isotropy_error < 1e-10
    np.testing.assert_allclose(z.T @ z, 40 / 30 * np.eye(30), atol=1e-9)
    x[:, -1] = x[:, 0]                     # exactly rank 29: still a clear error
    with pytest.raises(ValueError, match="singular"):
        forster_fit(x)
