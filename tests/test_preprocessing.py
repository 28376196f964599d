"""The paper's input preparation in the figures and the CLI: Forster's transform is fitted only
for K-FAC and only when N > d; every other method keeps the globally standardized inputs."""
import numpy as np
import pytest

from ntkngd import cli, data
from ntkngd.data import forster
from ntkngd.figures import common, get


def test_forster_only_for_kfac_and_only_when_n_exceeds_d(monkeypatch):
    fits = []
    real_fit = forster._fit                 # the transform lives in ntkngd.data.forster
    monkeypatch.setattr(forster, "_fit", lambda x, *a, **k: fits.append(x.shape) or
                        real_fit(x, *a, **k))
    small = common.standard_setup(get("tiny", n_train=40), seed=0)        # N = 40 <= d = 64
    assert fits == [] and small.kfac is None and small.for_method("kfac") is small
    big = common.standard_setup(get("tiny", n_train=80), seed=0)          # N = 80 > d = 64
    assert len(fits) == 1 and fits[0][0] == 80                            # once, training inputs
    kf = big.for_method("kfac")
    assert kf is not big and kf.ds.input_dim == 64
    # digits 0 vs 1 (N = 80, rank 50): one image owns a direction (a pixel no other image uses),
    # which admits no isotropic position; without it the rows reach isotropy in the rank-49 span
    before, r = data.span_isotropy_error(big.ds.x_train)
    assert r == 50 and before > 3
    assert data.span_isotropy_error(kf.ds.x_train, 49)[0] < 1e-9
    assert "rank-49 span shared" in kf.ds.preprocessing and "error < 1e-10" in kf.ds.preprocessing
    for m in ("gd", "exact", "block_diagonal", "block_tridiagonal", "unit_wise"):
        assert big.for_method(m) is big
    np.testing.assert_allclose(np.linalg.norm(big.ds.x_train, axis=1), 1.0, rtol=1e-14)
    rec = big.record()
    assert rec["kfac_forster"] is True and "Forster" in rec["kfac_preprocessing"]
    assert rec["preprocessing"].startswith("global standardization") and "Forster" not in \
        rec["preprocessing"]
    assert small.record()["kfac_forster"] is False


@pytest.mark.parametrize("method,n,applied", [("kfac", 80, True), ("exact", 80, False),
                                              ("kfac", 40, False)])
def test_cli_forster_flag_applies_to_kfac_when_n_exceeds_d(method, n, applied, capsys):
    args = cli.parser().parse_args(["train", "--method", method, "--n-train", str(n),
                                    "--forster"])
    ds = cli._dataset(args, method)
    assert ("Forster" in ds.preprocessing) is applied
    assert (data.span_isotropy_error(ds.x_train)[0] < 1e-9) is applied     # in its own span
    if not applied:
        assert "--forster not applied" in capsys.readouterr().err


def test_cli_defaults_to_the_authors_preprocessing():
    args = cli.parser().parse_args(["train"])
    assert args.standardize == "global" and args.whiten is False and args.forster is False
    ds = cli._dataset(args, "exact")
    ref = data.digits(n_train=48, n_test=100, classes=(0, 1))
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    assert ds.preprocessing == ("global standardization (one mean and std of the training array) "
                                "+ unit-norm rows")
