"""The figure cache and store: corrupt parts are misses, damaged outputs are not 'cached', no
temporary files survive, the key follows the code, output is deterministic and unchanged files
are left untouched, and no profile overwrites another's figures."""
import os

import numpy as np
import pytest

from ntkngd import cli, figures, store

NAME = "btd_depth"          # the fastest figure (about 5 s on the tiny profile)


def _quiet_run(out, **kw):
    return figures.run([NAME], "tiny", str(out), log=lambda *_: None, **kw)


def _snapshot(out):
    paths = [os.path.join(out, f"{NAME}.{ext}") for ext in ("png", "pdf", "json")]
    return {p: (open(p, "rb").read(), os.stat(p).st_mtime_ns) for p in paths}


@pytest.fixture(scope="module")
def figure_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    assert _quiet_run(out) == {NAME: "computed"}
    return out


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing_key", "no_manifest",
                                    "garbage"])
def test_corrupt_cache_part_is_recomputed(tmp_path, damage):
    cache = store.Cache(str(tmp_path), {"x": 1})
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(4.0), "b": np.eye(2)}
    cache.get_or_compute("part", compute)
    path = cache.path("part")
    raw = open(path, "rb").read()
    if damage == "truncated":
        open(path, "wb").write(raw[: len(raw) // 2])
    elif damage == "empty":
        open(path, "wb").close()
    elif damage == "missing_key":
        np.savez(path, a=np.arange(4.0), __keys__=np.array(["a", "b"]))
    elif damage == "no_manifest":
        np.savez(path, a=np.arange(4.0))
    else:
        open(path, "wb").write(b"\x00" * 100)
    again = store.Cache(str(tmp_path), {"x": 1})
    result = again.get_or_compute("part", compute)
    assert len(calls) == 2 and again.misses == 1 and again.hits == 0
    np.testing.assert_array_equal(result["b"], np.eye(2))
    assert store.read_npz(path)["a"].tolist() == [0.0, 1.0, 2.0, 3.0]   # repaired on disk


def test_cache_key_follows_the_code(tmp_path):
    a = store.Cache(str(tmp_path), {"x": 1}, code="v1")
    b = store.Cache(str(tmp_path), {"x": 1}, code="v2")
    assert a.directory != b.directory
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n")
    h1 = store.source_hash(str(pkg))
    store.source_hash.cache_clear()
    (pkg / "m.py").write_text("x = 2\n")
    assert store.source_hash(str(pkg)) != h1
    store.source_hash.cache_clear()


def test_edit_to_the_library_recomputes_the_figure(figure_dir, monkeypatch):
    assert _quiet_run(figure_dir) == {NAME: "cached"}
    monkeypatch.setattr(store, "source_hash", lambda *_: "an edited library")
    assert _quiet_run(figure_dir) == {NAME: "computed"}


def test_truncated_png_is_not_cached(figure_dir):
    png = os.path.join(figure_dir, f"{NAME}.png")
    good = open(png, "rb").read()
    assert _quiet_run(figure_dir) == {NAME: "cached"}
    open(png, "wb").write(good[:100])                  # JSON untouched, PNG truncated
    assert _quiet_run(figure_dir) == {NAME: "computed"}
    assert open(png, "rb").read() == good
    os.remove(os.path.join(figure_dir, f"{NAME}.pdf"))
    assert _quiet_run(figure_dir) == {NAME: "computed"}


def test_stale_temp_files_are_removed(figure_dir):
    stale = [os.path.join(figure_dir, f".{NAME}.abc123.tmp.png")]
    cache_root = os.path.join(figure_dir, ".cache", NAME)
    stale += [os.path.join(cache_root, d, ".depth_3.xyz.tmp.npz") for d in os.listdir(cache_root)]
    for p in stale:
        open(p, "wb").write(b"partial")
    _quiet_run(figure_dir)
    assert not [p for p in stale if os.path.exists(p)]


def test_regenerating_leaves_identical_files_untouched(figure_dir):
    """A fresh clone (no cache) recomputes the committed figures: same bytes, files untouched."""
    import shutil
    before = _snapshot(figure_dir)
    shutil.rmtree(os.path.join(figure_dir, ".cache"))
    assert _quiet_run(figure_dir) == {NAME: "computed"}
    assert _snapshot(figure_dir) == before          # bytes and modification times


def test_other_profiles_never_overwrite_the_committed_figures(tmp_path, monkeypatch):
    assert figures.default_out_dir("quick") == "figures"
    assert figures.default_out_dir("tiny") == os.path.join("figures", "tiny")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / f"{NAME}.png").write_bytes(b"committed")
    assert cli.main(["figures", "--profile", "tiny", "--only", NAME, "--no-progress"]) == 0
    assert (tmp_path / "figures" / f"{NAME}.png").read_bytes() == b"committed"
    assert (tmp_path / "figures" / "tiny" / f"{NAME}.png").stat().st_size > 1000


def test_ctrl_c_during_figures_is_one_line_exit_130(monkeypatch, capsys, tmp_path):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(figures, "run", interrupted)
    assert cli.main(["figures", "--out", str(tmp_path), "--no-progress"]) == 130
    assert capsys.readouterr().err == "ntkngd figures: interrupted\n"


def test_failing_figure_is_one_line_with_the_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    from ntkngd.figures import btd_depth

    def boom(ctx):
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(btd_depth, "compute", boom)
    assert cli.main(["figures", "--profile", "tiny", "--out", str(tmp_path), "--no-progress",
                     "--only", NAME]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"ntkngd figures: error: failed: {NAME}\n"
    trace = tmp_path / ".cache" / f"{NAME}.traceback.txt"
    assert f"failed: RuntimeError: simulated failure (traceback in {trace})" in captured.out
    assert "Traceback" in trace.read_text() and "simulated failure" in trace.read_text()


def test_figure_json_hides_last_bit_differences(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    store.write_json(str(a), {"x": [0.1 + 0.2, 1e-300 * (1 + 2e-16)], "y": np.float64(2.5)},
                     digits=figures.JSON_DIGITS)
    store.write_json(str(b), {"x": [0.3, 1e-300], "y": 2.5}, digits=figures.JSON_DIGITS)
    assert a.read_bytes() == b.read_bytes()
    assert store.read_json(str(a)) == {"x": [0.3, 1e-300], "y": 2.5}
    store.write_json(str(a), {"x": 0.1 + 0.2})                         # default: full precision
    assert store.read_json(str(a))["x"] == 0.1 + 0.2


def test_vouched_rounds_and_records_roundoff_as_zero():
    """Figures are drawn and recorded at 4 significant digits; a relative deviation at or below
    1e-10 (an operator set to alpha I: 1e-16 on one BLAS kernel, 0 on another) and any value
    below 1e-20 (a loss at the float64 floor) become exactly 0, so last-digit differences
    between BLAS kernels change no committed file."""
    from ntkngd.store import vouched
    a = {"exact/deviation": np.array([1.1e-16, 0.0, 3.04351e-4]),
         "exact/loss_1": np.array([0.1234567, 2.3e-7 * (1 + 1e-9), 4e-32]),
         "nested": {"alpha": 512.97531, "n": 3}}
    b = {"exact/deviation": np.array([0.0, 2.2e-16, 3.04352e-4]),
         "exact/loss_1": np.array([0.1234568, 2.3e-7, 9e-31]),
         "nested": {"alpha": 512.97529, "n": 3}}
    va, vb = vouched(a, 4), vouched(b, 4)
    for k in ("exact/deviation", "exact/loss_1"):
        np.testing.assert_array_equal(va[k], vb[k])
    np.testing.assert_array_equal(va["exact/deviation"], [0.0, 0.0, 3.044e-4])
    np.testing.assert_array_equal(va["exact/loss_1"], [0.1235, 2.3e-7, 0.0])
    assert va["nested"] == {"alpha": 513.0, "n": 3} == vb["nested"]
    assert np.isnan(vouched({"x": np.array([np.nan])}, 4)["x"][0])
