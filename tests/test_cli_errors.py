"""The command line: every default and choice in --help, exit code 2 with one line for bad
input in every command, custom block patterns, and the isotropy report in words."""
import os
import subprocess
import sys

import pytest

from ntkngd import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _exit_code(argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "check"])
@pytest.mark.parametrize("argv,message", [
    (["--damping", "-1"], "argument --damping: must be a finite number >= 0, got -1"),
    (["--n-train", "0"], "argument --n-train: must be a positive integer (>= 1), got 0"),
    (["--n-train", "2.5"], "argument --n-train: must be a positive integer, got '2.5'"),
    (["--width", "-3"], "argument --width: must be a positive integer (>= 1), got -3"),
    (["--pattern", "1,1;0,1"], "block pattern must be symmetric"),
    (["--pattern", "1,2;2,1"], "block pattern entries must be 0 or 1"),
    (["--pattern", "1,1;1"], "pattern rows have different lengths"),
])
def test_bad_arguments_exit_2_with_one_line(command, argv, message, capsys):
    assert _exit_code([command, *argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"ntkngd {command}: error: ") and message in line


def test_unknown_method_is_rejected_by_train_and_check(capsys):
    assert _exit_code(["check", "--methods", "exact", "newton"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ntkngd check: error: argument --methods: unknown method 'newton'")
    assert _exit_code(["train", "--method", "newton"]) == 2
    assert "unknown method 'newton'" in _one_line(capsys.readouterr().err)


def test_missing_data_directory_is_one_line_without_traceback():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-m", "ntkngd", "train", "--data", "mnist",
                          "--data-dir", "/nonexistent/mnist"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr == "ntkngd train: error: MNIST directory not found: /nonexistent/mnist\n"
    assert out.stdout == ""


def test_help_shows_every_default_and_choice(capsys):
    helps = {}
    for command in ("train", "check", "figures"):
        assert _exit_code([command, "--help"]) == 0
        helps[command] = " ".join(capsys.readouterr().out.split())
    for command in ("train", "check"):
        h = helps[command]
        for text in ("--width WIDTH hidden width M (default: 1024)",
                     "--depth DEPTH trainable layers L (default: 3)",
                     "--n-train N_TRAIN training points N (default: 48)",
                     "relu", "erf", "leaky_relu", "(default: relu)",
                     "block_tridiagonal", "unit_wise", "--pattern S"):
            assert text in h, (command, text)
    assert "--steps STEPS training steps (default: 5)" in helps["train"]
    assert "(default: exact)" in helps["train"]
    assert "--profile {paper,quick,tiny}" in helps["figures"]
    assert "(default: quick)" in helps["figures"]
    assert "convergence" in helps["figures"] and "cross_entropy" in helps["figures"]


def test_method_choices_come_from_the_registry(capsys):
    from ntkngd import methods
    methods.register_method(methods.pattern_method("brand_new", methods.patterns.diagonal))
    try:
        assert _exit_code(["train", "--help"]) == 0
        assert "brand_new" in capsys.readouterr().out
    finally:
        methods.REGISTRY.pop("brand_new")


def test_custom_block_pattern_on_the_command_line(capsys):
    # two independent pairs of layers: S = blockdiag(11', 11'), alpha = 1'S^+1 = 2
    assert cli.main(["check", "--n-train", "6", "--depth", "4", "--width", "32",
                     "--pattern", "1,1,0,0;1,1,0,0;0,0,1,1;0,0,1,1"]) == 0
    out = capsys.readouterr().out
    assert "pattern  alpha measured 2  predicted 2" in out
    assert "block_diagonal" not in out                    # only the pattern was asked for
    assert cli.main(["check", "--n-train", "6", "--depth", "3", "--width", "32",
                     "--methods", "exact", "--pattern", "1,1,0;1,1,1;0,1,1"]) == 0
    out = capsys.readouterr().out
    assert "exact  alpha measured 1  predicted 1" in out
    assert "pattern  alpha measured 1  predicted 1" in out   # block tri-diagonal, L = 3
    assert cli.main(["check", "--depth", "4", "--pattern", "1,1,0;1,1,1;0,1,1"]) == 2
    assert "S must be L x L" in _one_line(capsys.readouterr().err)
    assert cli.main(["train", "--n-train", "6", "--n-test", "6", "--depth", "3", "--width", "64",
                     "--steps", "1", "--pattern", "1,1,0;1,1,1;0,1,1"]) == 0
    rows = [r.split() for r in capsys.readouterr().out.splitlines() if r.strip()[:1].isdigit()]
    assert float(rows[1][3]) < 1e-20 * float(rows[0][3])   # predicted: one step at lr = 1/alpha


def test_isotropy_summary_in_words():
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import ntkngd as ng
    x = np.random.RandomState(0).randn(8, 3)
    K = ng.analytic_kernels(ng.mlp(3, 16), x / np.linalg.norm(x, axis=1, keepdims=True))
    damped = ng.isotropy(ng.operator("block_diagonal", K, damping=0.1)).summary()
    assert "damping == 0" not in damped and "failing" not in damped
    assert "damped (rho = 0.1): the theory's alpha is the rho -> 0 constant" in damped
    with pytest.warns(ng.TheoryConditionWarning):
        kfac = ng.isotropy(ng.operator("kfac", K)).summary()
    assert ("failing: more training points than input dimensions (N > d): the first-layer "
            "input Gram is singular") in kfac
    assert "note: literal K-FAC: the output layer contributes 1" in kfac


# ------------------------------------------------------------------ issue 18: one line, exit 2
@pytest.mark.parametrize("argv,message", [
    (["train", "--seed", "-3"], "argument --seed: must be an integer >= 0, got -3"),
    (["train", "--arch", "cnn", "--depth", "1"], "--arch cnn needs --depth >= 2"),
    (["train", "--loss", "bce", "--classes", "0", "1", "2"], "--loss bce needs two classes"),
    (["figures", "--out", "/dev/null/x", "--only", "spectra"],
     "--out /dev/null/x: cannot write figures there"),
])
def test_more_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    try:
        code = cli.main(argv + (["--n-train", "8"] if argv[0] == "train" else []))
    except SystemExit as e:      # argparse's own errors
        code = e.code
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"ntkngd {argv[0]}: error: ") and message in line


def test_bce_on_the_command_line_trains_on_zero_one_targets(capsys):
    assert cli.main(["train", "--loss", "bce", "--n-train", "8", "--n-test", "4", "--width", "16",
                     "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "targets 0/1 for --loss bce" in out


def _plugin(tmp_path, body: str) -> str:
    path = tmp_path / "plugin_mod.py"
    path.write_text(body)
    return str(path)


def test_plugin_cannot_replace_a_built_in_method(tmp_path, capsys):
    spec = _plugin(tmp_path, "import numpy as np\nimport ntkngd as ng\n"
                   "ng.register_method(ng.pattern_method('exact', lambda L: np.eye(L)))\n")
    assert cli.main(["--plugin", spec, "train", "--steps", "1"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'exact' is a built-in method name or alias" in line
    from ntkngd import methods
    assert methods.get_method("exact").pattern(3).matrix.sum() == 9     # still S = 1 1^T


def test_plugin_raising_at_run_time_is_one_line(tmp_path, capsys):
    from ntkngd import methods
    spec = _plugin(tmp_path, "import ntkngd as ng\nfrom ntkngd.methods import Method\n"
                   "def op(*a):\n    raise RuntimeError('plugin op failed')\n"
                   "ng.register_method(Method('raising_plugin_method', op, op))\n")
    try:
        assert cli.main(["--plugin", spec, "train", "--method", "raising_plugin_method",
                         "--steps", "1", "--n-train", "8", "--n-test", "4", "--width", "16"]) == 2
    finally:
        methods.REGISTRY.pop("raising_plugin_method", None)
    line = _one_line(capsys.readouterr().err)
    assert line == (f"ntkngd train: error: --plugin {spec} raised RuntimeError: "
                    "plugin op failed")


def test_register_method_refuses_built_in_names_unless_replace():
    from ntkngd import methods
    m = methods.pattern_method("exact", methods.patterns.diagonal)
    with pytest.raises(ValueError, match="'exact' is a built-in"):
        methods.register_method(m)
    with pytest.raises(ValueError, match="'btd' is a built-in"):
        methods.register_method(methods.pattern_method("other_name", methods.patterns.diagonal),
                                "btd")
    assert "other_name" not in methods.REGISTRY
