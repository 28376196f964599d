"""The figure pipeline and the command line: tiny-profile runs whose saved numbers are asserted,
caching, --force, failure isolation, atomic writes and resuming."""
import json
import os

import numpy as np
import pytest

from ntkngd import cli, commands, figures, store

FAST = ["convergence", "lr_sweep", "spectra", "btd_depth", "kfac_nd"]


def _results(out, name):
    with open(os.path.join(out, f"{name}.json")) as fh:
        return json.load(fh)["results"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("figures"))
    assert cli.main(["figures", "--profile", "tiny", "--out", out, "--no-progress",
                     "--only", *FAST]) == 0
    return out


def test_tiny_figures_saved_numbers(tiny_run):
    out = tiny_run
    for name in FAST:
        for ext in ("png", "pdf", "json"):
            assert os.path.getsize(os.path.join(out, f"{name}.{ext}")) > 1000 or ext == "json"
    btd = _results(out, "btd_depth")
    np.testing.assert_allclose(btd["alpha"], btd["theory"], rtol=1e-8)
    assert btd["theory"] == pytest.approx([1, 1, 1, 2, 2, 2], rel=1e-9)
    assert btd["singular"] == [False, True, False, False, True, False]
    kfac = _results(out, "kfac_nd")
    n, d = np.array(kfac["n"]), kfac["d"]
    raw, forster = np.array(kfac["raw"]), np.array(kfac["forster"], dtype=float)
    assert np.all(raw[n <= d] < 1e-8) and np.all(raw[n > d] > 1e-3)      # isotropic iff N <= d
    assert np.all(forster[n >= d] < 1e-6)                                # restored by Forster
    conv = _results(out, "convergence")
    for m in ["exact", "block_diagonal", "block_tridiagonal", "kfac"]:
        loss, theory = np.array(conv[f"{m}/loss_1"]), np.array(conv[f"{m}/theory_1"])
        assert theory[1] < 1e-20 * theory[0]          # theory: one-step convergence at lr = 1/alpha
        assert loss[1] < 0.5 * loss[0]                # width 64: the gap is O(M^{-1/2})
        assert loss[-1] < loss[1]
    sweep = _results(out, "lr_sweep")
    fr = np.array(sweep["fractions"])
    np.testing.assert_allclose(sweep["exact/theory"], (1 - fr) ** 2, atol=1e-12)
    spectra = _results(out, "spectra")
    np.testing.assert_allclose(spectra["block_diagonal/inf"], 1.0, atol=1e-8)
    assert spectra["gd/inf"][0] == pytest.approx(1.0) and spectra["gd/inf"][-1] < 0.5


def test_rerun_is_cached_and_force_recomputes(tiny_run):
    logs = []
    status = figures.run(["btd_depth"], "tiny", tiny_run, log=logs.append)
    assert status == {"btd_depth": "cached"}
    status = figures.run(["btd_depth"], "tiny", tiny_run, force=True, log=logs.append)
    assert status == {"btd_depth": "computed"}
    # figures without this machine's part cache (e.g. committed ones in a fresh clone) regenerate
    import shutil
    shutil.rmtree(os.path.join(tiny_run, ".cache", "btd_depth"))
    assert figures.run(["btd_depth"], "tiny", tiny_run, log=logs.append) == {"btd_depth": "computed"}
    # a different configuration is not served from the cache
    prof = figures.get("tiny", max_depth=4)
    assert figures.run(["btd_depth"], prof, tiny_run, log=logs.append) == {"btd_depth": "computed"}
    assert len(_results(tiny_run, "btd_depth")["alpha"]) == 4


def test_failing_figure_is_reported_and_others_finish(tmp_path, monkeypatch):
    from ntkngd.figures import kfac_nd

    def boom(ctx):
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(kfac_nd, "compute", boom)
    status = figures.run(["kfac_nd", "btd_depth"], "tiny", str(tmp_path), log=lambda *_: None)
    assert status["kfac_nd"].startswith("failed: RuntimeError: simulated failure")
    assert status["btd_depth"] == "computed"
    assert cli.main(["figures", "--profile", "tiny", "--out", str(tmp_path), "--no-progress",
                     "--only", "kfac_nd"]) == 1


class Crash(BaseException):
    """Stands for a kill / Ctrl-C in the middle of a run (not caught as a figure failure)."""


def test_interrupted_run_resumes_and_keeps_old_results(tmp_path, monkeypatch):
    from ntkngd.figures import btd_depth
    real_plot = btd_depth.plot
    out = str(tmp_path)
    figures.run(["btd_depth"], "tiny", out, log=lambda *_: None)
    old_png = open(os.path.join(out, "btd_depth.png"), "rb").read()
    old_json = open(os.path.join(out, "btd_depth.json")).read()

    def crash(res, ctx):
        raise Crash
    monkeypatch.setattr(btd_depth, "plot", crash)
    with pytest.raises(Crash):
        figures.run(["btd_depth"], "tiny", out, force=True, log=lambda *_: None)
    assert open(os.path.join(out, "btd_depth.png"), "rb").read() == old_png
    assert open(os.path.join(out, "btd_depth.json")).read() == old_json
    assert not [f for f in os.listdir(out) if f.startswith(".btd_depth")]   # no temp files left
    monkeypatch.undo()
    # a new configuration computed part-way resumes from the saved parts
    prof = figures.get("tiny", max_depth=5)
    calls = []
    real = btd_depth.compute

    def counting(ctx):
        res = real(ctx)
        calls.append((ctx.cache.hits, ctx.cache.misses))
        return res
    monkeypatch.setattr(btd_depth, "compute", counting)
    monkeypatch.setattr(btd_depth, "plot", crash)
    with pytest.raises(Crash):
        figures.run(["btd_depth"], prof, out, log=lambda *_: None)
    monkeypatch.setattr(btd_depth, "plot", real_plot)
    figures.run(["btd_depth"], prof, out, log=lambda *_: None)
    assert calls[0] == (0, 5) and calls[1] == (5, 0)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = str(tmp_path / "r.json")
    store.write_json(path, {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with store.atomic_path(path) as tmp:
            open(tmp, "w").write("partial")
            1 / 0
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]
    cache = store.Cache(str(tmp_path / "c"), {"x": 1})
    calls = []
    f = lambda: calls.append(1) or {"v": np.arange(3)}
    np.testing.assert_array_equal(cache.get_or_compute("k", f)["v"], [0, 1, 2])
    cache.get_or_compute("k", f)
    assert len(calls) == 1 and cache.hits == 1
    store.Cache(str(tmp_path / "c"), {"x": 1}, force=True).get_or_compute("k", f)
    assert len(calls) == 2


def test_cli_train_and_check(capsys):
    assert cli.main(["train", "--method", "block_diagonal", "--steps", "2", "--n-train", "8",
                     "--n-test", "8", "--width", "256"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    measured = [float(r[1]) for r in rows]
    predicted_inf = [float(r[3]) for r in rows]
    assert measured[1] < 0.2 * measured[0] and predicted_inf[1] < 1e-20
    assert cli.main(["check", "--n-train", "8", "--width", "64", "--depth", "4"]) == 0
    out = capsys.readouterr().out
    assert "block_tridiagonal  alpha measured 2  predicted 2" in out
    assert "kfac  alpha measured 25  predicted 25" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--method", "newton", "--n-train", "4", "--n-test", "4"])
    assert e.value.code == 2
    assert "unknown method 'newton'" in capsys.readouterr().err


def test_cli_train_seeds_summarizes_over_seeds(capsys):
    """--seeds 3: one table per seed, then mean / std / min / max of each quantity over them; the
    authors' column only for their settings (MNIST 0 vs 1, N = 100, N' = 50, width 4096, ...)."""
    assert cli.main(["train", "--method", "exact", "--steps", "2", "--n-train", "6",
                     "--n-test", "6", "--width", "128", "--seeds", "3", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("seed ") >= 3 and "exact over 3 seeds [4, 5, 6]" in out
    rows = {line[:40].strip(): line[40:].split() for line in out.splitlines()
            if line.startswith("train loss, step 1") or line.startswith("kept L1/L0")}
    step1 = [float(line.split()[1]) for line in out.splitlines() if line.startswith("   1 ")]
    assert len(step1) == 3              # the per-seed tables' measured train loss at step 1
    mean, std, lo, hi = map(float, rows["train loss, step 1"])
    # printed to 4 significant digits (std 3) from tables printed to 5: half a unit of the last
    np.testing.assert_allclose([mean, lo, hi], [np.mean(step1), min(step1), max(step1)], rtol=6e-4)
    np.testing.assert_allclose(std, np.std(step1, ddof=1), rtol=6e-3)
    assert "authors" not in out
    args = cli.parser().parse_args(
        ["train", "--data", "mnist", "--n-train", "100", "--n-test", "50", "--width", "4096",
         "--lr", "1", "--method", "exact", "--steps", "2"])
    assert commands._authors_settings(args)
    args.width = 2048
    assert not commands._authors_settings(args)


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("figures", "train", "check"):
        assert cmd in out


def test_cli_train_cross_entropy(capsys):
    assert cli.main(["train", "--method", "exact", "--loss", "ce", "--classes", "0", "1", "2",
                     "--n-train", "9", "--n-test", "9", "--steps", "2", "--width", "64"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    train_ce = [float(r[1]) for r in rows]
    assert train_ce[0] > train_ce[1] > train_ce[2]
    assert float(rows[0][1]) == pytest.approx(float(rows[0][3]))   # prediction starts at f_0
