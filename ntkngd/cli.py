"""The `ntkngd` command: figures, train, check.

Errors are one line, `ntkngd <command>: error: ...`, with exit code 2 (bad input) or 130
(interrupted); heavy modules are imported only once a command runs, so `--help` is fast.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA_SETS = ("digits", "sphere", "gaussian", "mnist", "cifar10")


def _enable_x64(enabled: bool) -> None:
    import jax
    jax.config.update("jax_enable_x64", enabled)


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


# ----------------------------------------------------------------------------- commands
def _dataset(args, method: str | None = None):
    """The data set of the command line, prepared as the paper's authors do (global
    standardization, unit-norm rows); --forster puts K-FAC's inputs (only) in isotropic position
    when N > d."""
    from . import data
    kw = dict(n_train=args.n_train, n_test=args.n_test)
    std = {"standardize": args.standardize}
    name = args.data
    one_hot = getattr(args, "loss", "mse") == "ce"
    if name == "digits":
        ds = data.digits(classes=tuple(args.classes), binary=len(args.classes) == 2 and not one_hot,
                         whiten=args.whiten, **std, **kw)
    elif name == "sphere":
        ds = data.sphere(args.n_train, args.n_test, args.dim, seed=args.seed)
    elif name == "gaussian":
        ds = data.gaussian(args.n_train, args.n_test, args.dim, seed=args.seed, **std)
    elif name in ("mnist", "cifar10"):
        if not args.data_dir and name == "cifar10":
            raise ValueError(f"--data {name} needs --data-dir pointing at the files you have")
        loader = data.load_mnist if name == "mnist" else data.load_cifar10
        ds = loader(args.data_dir, classes=tuple(args.classes),
                    binary=len(args.classes) == 2 and not one_hot, seed=args.seed, **std, **kw)
    else:
        raise SystemExit(f"unknown data set {name!r}")
    if getattr(args, "loss", "mse") in ("bce", "sigmoid_binary_cross_entropy"):
        ds = _zero_one_targets(ds)
    if args.forster and method == "kfac" and ds.n_train > ds.input_dim:
        with warnings.catch_warnings():   # non-convergence is reported in ds.preprocessing
            warnings.simplefilter("ignore", UserWarning)
            ds = data.forster_dataset(ds, iters=100, span=True)
    elif args.forster:
        why = "N <= d" if ds.n_train <= ds.input_dim else "it applies to K-FAC's inputs only"
        print(f"note: --forster not applied ({why})", file=sys.stderr)
    return ds


def _zero_one_targets(ds):
    """The binary +-0.5 targets as 0/1 (the first class is 1), for the sigmoid cross-entropy."""
    import dataclasses
    if ds.y_train.shape[1] != 1:
        raise ValueError(f"--loss bce needs two classes (one output with 0/1 targets), got "
                         f"{ds.y_train.shape[1]} classes: use --loss ce for more")
    return dataclasses.replace(ds, y_train=(ds.y_train > 0).astype(float),
                               y_test=(ds.y_test > 0).astype(float),
                               preprocessing=ds.preprocessing + "; targets 0/1 for --loss bce")


def _net(args, out_dim):
    if args.arch == "cnn" and args.depth < 2:
        raise ValueError(f"--arch cnn needs --depth >= 2 (depth - 1 convolutions and the dense "
                         f"readout), got --depth {args.depth}")
    if args.arch == "cnn":   # ntkngd.serial_network
        from .serial_network import cnn
        return cnn(args.channels, depth=args.depth - 1, activation=args.activation,
                   W_std=args.w_std, b_std=args.b_std or None, out_dim=out_dim)
    from . import mlp
    return mlp(args.depth, args.width, args.activation, W_std=args.w_std, b_std=args.b_std,
               out_dim=out_dim)


def _inputs(args, ds):
    """(x_train, x_test, input shape): flat vectors for an MLP, square single-channel images
    (N, s, s, 1) for --arch cnn."""
    if args.arch != "cnn":
        return ds.x_train, ds.x_test, (-1, ds.input_dim)
    side = int(round(ds.input_dim ** 0.5))
    if args.whiten or side * side != ds.input_dim:
        raise ValueError(f"--arch cnn needs square single-channel images; the data have "
                         f"d = {ds.input_dim} features{' (whitened)' if args.whiten else ''}: "
                         "use --data digits without --whiten")
    return (ds.x_train.reshape(-1, side, side, 1), ds.x_test.reshape(-1, side, side, 1),
            (-1, side, side, 1))


def _describe(args, net) -> str:
    if args.arch == "cnn":
        return f"CNN with {args.channels} channels, {args.activation}"
    return f"width {args.width}, {net.activation}"


def _check_pattern_depth(pattern, depth: int) -> None:
    if pattern is not None and pattern.depth != depth:
        raise ValueError(f"--pattern is {pattern.depth} x {pattern.depth} but the network has "
                         f"--depth {depth} layers; S must be L x L")


def _check_writable(path: str, option: str) -> None:
    """OSError naming `option` unless directory `path` exists or can be made, and takes files."""
    import tempfile
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OSError(f"{option} {path}: cannot write figures there ({e.strerror or e})") from None


def cmd_figures(args) -> int:
    """ntkngd figures: compute (or reuse) and draw the figures of one profile."""
    from . import figures
    _enable_x64(True)
    prof = figures.get(args.profile, data_dir=args.data_dir)
    out = args.out if args.out is not None else figures.default_out_dir(args.profile)
    _check_writable(out, "--out")
    only = ["cnn"] if args.arch == "cnn" and not args.only else args.only
    status = figures.run(only or None, prof, out, force=args.force,
                         progress=not args.no_progress)
    failed = [n for n, s in status.items() if s.startswith("failed")]
    if failed:
        print(f"ntkngd figures: error: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _authors_settings(args) -> bool:
    """Whether the command line is the authors' published run (ntkngd.seed_summary)."""
    from .seed_summary import AUTHORS_SETTINGS as A
    return (args.data == A["data"] and tuple(args.classes) == A["classes"] and
            args.n_train == A["n_train"] and args.n_test == A["n_test"] and
            args.depth == A["depth"] and args.width == A["width"] and args.arch == "mlp" and
            abs(args.w_std ** 2 - A["w_var"]) < 1e-12 and args.b_std == A["b_std"] and
            args.lr == A["lr"] and args.method == A["method"] and args.loss == "mse" and
            args.steps >= 1)


def cmd_train(args) -> int:
    """ntkngd train: train one method and print measured vs predicted losses (--seeds K: K
    seeds, then their mean and spread; beside the authors' run when the settings are theirs)."""
    _check_pattern_depth(args.pattern, args.depth)
    _enable_x64(not args.float32)
    import jax

    from .training.loop import train
    from .methods import canonical
    logs, seeds = [], list(range(args.seed, args.seed + args.seeds))
    for seed in seeds:
        args.seed = seed
        ds = _dataset(args, canonical(args.method))
        net = _net(args, ds.out_dim)
        xtr, xte, shape = _inputs(args, ds)
        params = net.init_fn(jax.random.PRNGKey(seed), shape)[1]
        method = args.pattern if args.pattern is not None else args.method
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log = train(method, net, params, (xtr, ds.y_train, xte, ds.y_test),
                        steps=args.steps, lr=args.lr, damping=args.damping, loss=args.loss)
        logs.append(log)
        print(f"{f'seed {seed}: ' if len(seeds) > 1 else ''}data {ds.name}: N = {ds.n_train}, "
              f"N' = {ds.n_test}, d = {ds.input_dim}, C = {ds.out_dim}; network L = {net.depth}, "
              f"{_describe(args, net)}")
        print(f"preprocessing: {ds.preprocessing}")
        if ds.source:
            print(f"source: {ds.source}")
        print(log.table())
        for w in sorted({_forster_aware(str(w.message), ds.preprocessing) for w in caught}):
            print(f"warning: {w}", file=sys.stderr)
    if len(seeds) > 1 and logs[0].is_mse:
        from .seed_summary import summary
        print(summary(logs, seeds, _authors_settings(args)))
    return 0


def _forster_aware(message: str, preprocessing: str) -> str:
    """K-FAC's advice to apply the Forster transform, rewritten when --forster was applied (the
    inputs then fell short of isotropic position: the fit's own report says by how much)."""
    if "forster_transform" not in message or "Forster" not in preprocessing:
        return message
    return (message.split("; put the inputs")[0] + "; --forster was applied but the inputs are not "
            f"exactly in isotropic position ({preprocessing.split('Forster', 1)[1].strip()})")


def cmd_check(args) -> int:
    """ntkngd check: isotropy report of every method (or the chosen ones)."""
    _check_pattern_depth(args.pattern, args.depth)
    _enable_x64(True)
    import jax

    from . import analytic_kernels, isotropy, method_names, operator
    from .empirical import empirical_kernels
    ds = _dataset(args)
    net = _net(args, ds.out_dim)
    xtr, xte, shape = _inputs(args, ds)
    kernels = {"infinite width": analytic_kernels(net, xtr, xte)}
    if args.finite:
        params = net.init_fn(jax.random.PRNGKey(args.seed), shape)[1]
        kernels[f"finite: {_describe(args, net)}"] = empirical_kernels(net, params, xtr, xte)
    print(f"data {ds.name}: N = {ds.n_train}, d = {ds.input_dim}, C = {ds.out_dim}; "
          f"L = {net.depth}, {_describe(args, net)}, damping "
          f"{'default' if args.damping is None else args.damping}")
    print(f"preprocessing: {ds.preprocessing}")
    methods = list(args.methods or ([] if args.pattern is not None else method_names()))
    if args.pattern is not None:
        methods.append(args.pattern)
    for label, K in kernels.items():
        print(f"-- {label}")
        for m in methods:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                try:
                    rep = isotropy(operator(m, K, args.damping))
                except (ValueError, NotImplementedError) as e:
                    print(f"{getattr(m, 'name', m):>18s}  not available: {e}")
                    continue
            print(rep.summary())
    return 0


# ----------------------------------------------------------------------------- parser
class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default (and lists choices in the metavar)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `ntkngd <command>: error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _data_args(p):
    from .network import ACTIVATIONS
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
