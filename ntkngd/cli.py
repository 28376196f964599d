"""The `ntkngd` command: figures, train, check."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _enable_x64(enabled: bool) -> None:
    import jax
    jax.config.update("jax_enable_x64", enabled)


def _dataset(args):
    from . import data
    kw = dict(n_train=args.n_train, n_test=args.n_test)
    name = args.data
    one_hot = getattr(args, "loss", "mse") == "ce"
    if name == "digits":
        ds = data.digits(classes=tuple(args.classes), binary=len(args.classes) == 2 and not one_hot,
                         whiten=args.whiten, **kw)
    elif name == "sphere":
        ds = data.sphere(args.n_train, args.n_test, args.dim, seed=args.seed)
    elif name == "gaussian":
        ds = data.gaussian(args.n_train, args.n_test, args.dim, seed=args.seed)
    elif name in ("mnist", "cifar10"):
        if not args.data_dir:
            raise SystemExit(f"--data {name} needs --data-dir pointing at the files you have")
        loader = data.load_mnist if name == "mnist" else data.load_cifar10
        ds = loader(args.data_dir, classes=tuple(args.classes),
                    binary=len(args.classes) == 2 and not one_hot, **kw)
    else:
        raise SystemExit(f"unknown data set {name!r}")
    if args.forster:
        ds = data.forster_dataset(ds)
    return ds


def _net(args, out_dim):
    from . import mlp
    return mlp(args.depth, args.width, args.activation, W_std=args.w_std, b_std=args.b_std,
               out_dim=out_dim)


def cmd_figures(args) -> int:
    from . import figures
    _enable_x64(True)
    prof = figures.get(args.profile, data_dir=args.data_dir)
    status = figures.run(args.only or None, prof, args.out, force=args.force,
                         progress=not args.no_progress)
    failed = [n for n, s in status.items() if s.startswith("failed")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_train(args) -> int:
    _enable_x64(not args.float32)
    import jax

    from .engine import train
    ds = _dataset(args)
    net = _net(args, ds.out_dim)
    params = net.init_fn(jax.random.PRNGKey(args.seed), (-1, ds.input_dim))[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = train(args.method, net, params, (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
                    steps=args.steps, lr=args.lr, damping=args.damping, loss=args.loss)
    print(f"data {ds.name}: N = {ds.n_train}, N' = {ds.n_test}, d = {ds.input_dim}, "
          f"C = {ds.out_dim}; network L = {net.depth}, width {args.width}, {net.activation}")
    print(log.table())
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    _enable_x64(True)
    import jax

    from . import analytic_kernels, isotropy, method_names, operator
    from .empirical import empirical_kernels
    ds = _dataset(args)
    net = _net(args, ds.out_dim)
    kernels = {"infinite width": analytic_kernels(net, ds.x_train, ds.x_test)}
    if args.finite:
        params = net.init_fn(jax.random.PRNGKey(args.seed), (-1, ds.input_dim))[1]
        kernels[f"width {args.width}"] = empirical_kernels(net, params, ds.x_train, ds.x_test)
    print(f"data {ds.name}: N = {ds.n_train}, d = {ds.input_dim}, C = {ds.out_dim}; "
          f"L = {net.depth}, {net.activation}, damping {args.damping}")
    methods = args.methods or list(method_names())
    for label, K in kernels.items():
        print(f"-- {label}")
        for m in methods:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                try:
                    rep = isotropy(operator(m, K, args.damping))
                except (ValueError, NotImplementedError) as e:
                    print(f"{m:>18s}  not available: {e}")
                    continue
            print(rep.summary())
    return 0


def _data_args(p):
    p.add_argument("--data", default="digits",
                   choices=["digits", "sphere", "gaussian", "mnist", "cifar10"])
    p.add_argument("--data-dir", default=None, help="directory with MNIST / CIFAR-10 files")
    p.add_argument("--classes", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-train", type=int, default=48)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--dim", type=int, default=64, help="input dimension of synthetic data")
    p.add_argument("--forster", action="store_true", help="put inputs in isotropic position")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=True,
                   help="PCA-whiten the digits (default; the raw 8x8 Gram is ill-conditioned)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--activation", default="relu")
    p.add_argument("--w-std", type=float, default=2 ** 0.5)
    p.add_argument("--b-std", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)


def parser() -> argparse.ArgumentParser:
    from .figures import available
    from .losses import LOSSES
    from .methods import ALIASES, method_names
    methods = list(method_names())
    ap = argparse.ArgumentParser(prog="ntkngd", description="NGD with exact and approximate "
                                 "Fisher information in wide networks (Karakida & Osawa 2020).")
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("figures", help="regenerate the figures (cached by configuration)")
    f.add_argument("--only", nargs="+", choices=available(), metavar="NAME",
                   help=f"figures to run: {', '.join(available())}")
    f.add_argument("--profile", default="quick", choices=["tiny", "quick", "paper"])
    f.add_argument("--out", default="figures")
    f.add_argument("--force", action="store_true", help="recompute even if cached")
    f.add_argument("--data-dir", default=None, help="MNIST files for the figures (else digits)")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(fn=cmd_figures)
    t = sub.add_parser("train", help="train one method and print measured vs predicted losses")
    t.add_argument("--method", default="exact", metavar="METHOD",
                   help=f"one of {', '.join(methods)} (the registered methods; aliases "
                   f"{', '.join(sorted(ALIASES))})")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--lr", type=float, default=None, help="default: 1/alpha of the method")
    t.add_argument("--damping", type=float, default=None,
                   help="default: 0 (unit_wise: 1e-6 x the NTK's mean diagonal)")
    t.add_argument("--float32", action="store_true")
    t.add_argument("--loss", default="mse", choices=sorted(LOSSES) + ["ce", "bce"],
                   help="ce: softmax cross-entropy with one-hot targets (C >= 2); bce: sigmoid "
                   "binary cross-entropy (C = 1, targets 0/1)")
    _data_args(t)
    t.set_defaults(fn=cmd_train)
    c = sub.add_parser("check", help="isotropy report of every method")
    c.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"default: every registered method ({', '.join(methods)})")
    c.add_argument("--damping", type=float, default=0.0)
    c.add_argument("--finite", action="store_true", help="also report the finite network's operators")
    _data_args(c)
    c.set_defaults(fn=cmd_check)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ntkngd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
