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
