"""The `ntkngd` command: argument types, the parser, --plugin loading and `main`; the commands
themselves (figures, train, check) are in ntkngd.commands.

Errors are one line, `ntkngd <command>: error: ...`, with exit code 2 (bad input) or 130
(interrupted); heavy modules are imported only once a command runs, so `--help` is fast.
"""
from __future__ import annotations

import argparse
import os
import sys

# the commands (tests also reach _dataset and _forster_aware through this module)
from .commands import _dataset, _forster_aware, cmd_check, cmd_figures, cmd_train  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA_SETS = ("digits", "sphere", "gaussian", "mnist", "cifar10")


# ----------------------------------------------------------------------------- argument types
def _number_type(cast, lowest: float, strict: bool, kind: str, bound: str):
    """An argparse type: text -> cast(text), finite and > lowest (strict) or >= lowest; errors
    say `kind` (text that does not parse) or `bound` (a value out of range)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if not (value > lowest if strict else value >= lowest) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = kind.replace(" ", "_")
    parse.__doc__ = f"argparse type: {bound}."
    return parse


positive_int = _number_type(int, 1, False, "a positive integer", "a positive integer (>= 1)")
non_negative_int = _number_type(int, 0, False, "an integer >= 0", "an integer >= 0")
non_negative_float = _number_type(float, 0.0, False, "a number >= 0", "a finite number >= 0")
positive_float = _number_type(float, 0.0, True, "a positive number", "a finite number > 0")


def method_name(text: str) -> str:
    """argparse type: a registered method name or alias, returned in canonical form."""
    from ._names import canonical_method
    try:
        return canonical_method(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def pattern_matrix(text: str):
    """argparse type: a layer block pattern S, rows separated by ';', entries by ',' or spaces,
    e.g. "1,1,0;1,1,1;0,1,1" (block tri-diagonal, L = 3)."""
    import numpy as np

    from .methods import block_pattern
    try:
        rows = [[float(v) for v in row.replace(",", " ").split()] for row in text.split(";")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"pattern must be rows of 0/1 separated by ';' and "
                                         f"entries by ',', e.g. \"1,1,0;1,1,1;0,1,1\"; got "
                                         f"{text!r}") from None
    if len({len(r) for r in rows}) != 1:
        raise argparse.ArgumentTypeError(f"pattern rows have different lengths: {text!r}")
    matrix = np.array(rows, dtype=float)
    try:
        return block_pattern(matrix, "pattern")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None



# ----------------------------------------------------------------------------- parser
class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default (and lists choices in the metavar)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `ntkngd <command>: error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _data_args(p):
    from .networks.fully_connected import ACTIVATIONS
    p.add_argument("--data", default="digits", choices=DATA_SETS, help="data set")
    p.add_argument("--data-dir", default=None, help="directory with MNIST / CIFAR-10 files "
                   "(MNIST: default the bundled test split)")
    p.add_argument("--classes", type=non_negative_int, nargs="+", default=[0, 1],
                   help="class labels to keep (2 classes: +-0.5 targets; more: one-hot)")
    p.add_argument("--n-train", type=positive_int, default=48, help="training points N")
    p.add_argument("--n-test", type=positive_int, default=100, help="test points N'")
    p.add_argument("--dim", type=positive_int, default=64,
                   help="input dimension of synthetic data")
    p.add_argument("--standardize", default="global", choices=["global", "feature", "none"],
                   help="before unit-norm rows: one global mean/std (as the paper's authors), "
                   "per-feature statistics, or none")
    p.add_argument("--forster", action="store_true",
                   help="train: put K-FAC's inputs in isotropic position when N > d (the paper)")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=False,
                   help="PCA-whiten the digits first (not the paper's preprocessing; it costs "
                   "generalization)")
    p.add_argument("--depth", type=positive_int, default=3, help="trainable layers L")
    p.add_argument("--width", type=positive_int, default=1024, help="hidden width M")
    p.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="nonlinearity")
    p.add_argument("--w-std", type=positive_float, default=2 ** 0.5, help="weight scale")
    p.add_argument("--b-std", type=non_negative_float, default=0.0,
                   help="bias scale (0: no bias)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the data and the parameters")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="train: run seeds --seed .. --seed + K - 1 and print the mean and spread "
                   "(beside the authors' published run when the settings are theirs)")
    _arch_args(p)
    p.add_argument("--pattern", type=pattern_matrix, default=None, metavar="S",
                   help="a custom L x L layer block pattern of the Fisher, rows separated by ';', "
                        "e.g. \"1,1,0;1,1,1;0,1,1\" (overrides --method / adds to --methods)")


def _arch_args(p, figures: bool = False) -> None:
    p.add_argument("--arch", default="mlp", choices=["mlp", "cnn"],
                   help="cnn: only the CNN figure (unless --only is given)" if figures else
                   "cnn: ntkngd.cnn, (depth - 1) 3x3 convolutions + global average pooling + "
                   "dense readout, on the digits as 8 x 8 images")
    if not figures:
        p.add_argument("--channels", type=positive_int, default=64,
                       help="channels of each convolution (--arch cnn)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `ntkngd` command (choices from the registries)."""
    from .figures import available
    from .figures.profiles import PROFILES
    from ._names import loss_names, method_names
    registered = list(method_names())
    methods = ", ".join(registered)
    ap = _Parser(prog="ntkngd", description="NGD with exact and approximate "
                                 "Fisher information in wide networks (Karakida & Osawa 2020).",
                                 formatter_class=_Formatter)
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="import a Python module or .py file first (repeatable): the methods and "
                    "losses it registers (ntkngd.register_method / register_loss) become choices "
                    "of train and check and are drawn by the figures")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{figures,train,check}")
    f = sub.add_parser("figures", help="regenerate the figures (cached by configuration)",
                       formatter_class=_Formatter)
    f.add_argument("--only", nargs="+", choices=available(), metavar="NAME",
                   help=f"figures to run (default: all): {', '.join(available())}")
    f.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                   help="sizes of the runs: " + "; ".join(
                       f"{p.name}: N = {p.n_train}, width {p.width}" for p in PROFILES.values()))
    f.add_argument("--out", default=None,
                   help="output directory (default: figures/ for the quick profile, "
                        "figures/<profile>/ otherwise)")
    f.add_argument("--force", action="store_true", help="recompute even if cached")
    f.add_argument("--data-dir", default=None, help="MNIST files for the figures (else digits)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--devices", type=positive_int, default=None, metavar="K",
                   help="compute the generalization figure's theory (gd, exact, block diagonal, "
                   "block tri-diagonal, K-FAC) with the sharded backend on a one-axis mesh of K "
                   "devices (ntkngd.sharded; on CPU K simulated devices); default out: "
                   "<default out>/devices<K>. None: the dense path")
    _arch_args(f, figures=True)
    f.set_defaults(fn=cmd_figures)
    t = sub.add_parser("train", help="train one method and print measured vs predicted losses",
                       formatter_class=_Formatter)
    t.add_argument("--method", default="exact", type=method_name, choices=registered,
                   help=f"NGD variant (aliases accepted): {methods}")
    t.add_argument("--steps", type=positive_int, default=5, help="training steps")
    t.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (None: 1/alpha of the method)")
    t.add_argument("--damping", type=non_negative_float, default=None,
                   help="rho >= 0 (None: 0; unit_wise: methods.unitwise.default_damping)")
    t.add_argument("--float32", action="store_true", help="train in float32 (default float64)")
    t.add_argument("--loss", default="mse", choices=list(loss_names()) + ["bce", "ce"],
                   help="ce: softmax cross-entropy with one-hot targets (C >= 2); bce: sigmoid "
                   "binary cross-entropy (C = 1, targets 0/1); any registered loss")
    _data_args(t)
    t.set_defaults(fn=cmd_train)
    c = sub.add_parser("check", help="isotropy report of every method",
                       formatter_class=_Formatter)
    c.add_argument("--methods", nargs="+", default=None, type=method_name, choices=registered,
                   metavar="METHOD", help=f"methods to report (None: all): {methods}")
    c.add_argument("--damping", type=non_negative_float, default=None,
                   help="rho >= 0 (None: 0; unit_wise: methods.unitwise.default_damping)")
    c.add_argument("--finite", action="store_true",
                   help="also report the finite network's operators")
    c.add_argument("--devices", type=positive_int, default=None, metavar="K",
                   help="also report the infinite-width operators of the sharded backend on a "
                   "one-axis mesh of K devices (ntkngd.sharded; on CPU K simulated devices; "
                   "gd, exact, block diagonal, block tri-diagonal, K-FAC)")
    _data_args(c)
    c.set_defaults(fn=cmd_check)
    return ap


_PLUGIN_FILES: dict[str, str] = {}   # file of each loaded plugin module -> its --plugin spec


def _plugin_frame(exc: BaseException):
    """The --plugin spec whose code raised `exc` (a frame of its traceback in a plugin file)."""
    import traceback
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        spec = _PLUGIN_FILES.get(os.path.abspath(frame.filename))
        if spec is not None:
            return spec
    return None


def load_plugin(spec: str) -> None:
    """Import `spec`, a module name or the path of a .py file (run as its own module), for the
    registrations it makes."""
    import importlib
    import importlib.util
    if not spec.endswith(".py"):
        module = importlib.import_module(spec)
        if getattr(module, "__file__", None):
            _PLUGIN_FILES[os.path.abspath(module.__file__)] = spec
        return
    path = os.path.abspath(spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {spec}")
    name = "ntkngd_plugin_" + "".join(ch if ch.isalnum() else "_" for ch in path)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    _PLUGIN_FILES[path] = spec
    module_spec.loader.exec_module(module)


def _load_plugins(argv) -> None:
    """Import every --plugin before the parser is built (its choices come from the registries)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    for spec in pre.parse_known_args(argv)[0].plugin:
        try:
            load_plugin(spec)
        except Exception as e:  # noqa: BLE001 - any failure of the user's module: one line, exit 2
            raise _PluginError(f"--plugin {spec}: {type(e).__name__}: {e}") from e


class _PluginError(Exception):
    pass


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 a figure failed, 2 bad input, 130 interrupted)."""
    try:
        _load_plugins(sys.argv[1:] if argv is None else argv)
    except _PluginError as e:
        print(f"ntkngd: error: {e}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print(f"ntkngd {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:
        print(f"ntkngd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only errors raised in a plugin's own code
        spec = _plugin_frame(e)
        if spec is None:
            raise
        print(f"ntkngd {args.command}: error: --plugin {spec} raised {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
