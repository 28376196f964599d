"""The commands of `ntkngd` (figures, train, check): each takes the parsed arguments of
ntkngd.cli and returns an exit code. Heavy modules are imported inside each command."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Sequence


def _enable_x64(enabled: bool) -> None:
    import jax
    jax.config.update("jax_enable_x64", enabled)


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
    if args.arch == "cnn":   # ntkngd.networks.stax_serial
        from .networks.stax_serial import cnn
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


def _requested_devices(args):
    """--devices K, made available before JAX starts its backend (simulated CPU devices); None
    when not given."""
    devices = getattr(args, "devices", None)
    if devices is not None:
        from .sharded.mesh import request_devices
        request_devices(devices, "--devices")
    return devices


def cmd_figures(args) -> int:
    """ntkngd figures: compute (or reuse) and draw the figures of one profile (--devices K: the
    figures that use a device mesh on K devices, written under <out>/devices<K> by default)."""
    devices = _requested_devices(args)
    from . import figures
    _enable_x64(True)
    prof = figures.get(args.profile, data_dir=args.data_dir)
    out = args.out if args.out is not None else figures.default_out_dir(args.profile)
    if args.out is None and devices is not None:     # never over the dense path's figures
        out = os.path.join(out, f"devices{devices}")
    _check_writable(out, "--out")
    only = ["cnn"] if args.arch == "cnn" and not args.only else args.only
    status = figures.run(only or None, prof, out, force=args.force,
                         progress=not args.no_progress, devices=devices)
    failed = [n for n, s in status.items() if s.startswith("failed")]
    if failed:
        print(f"ntkngd figures: error: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _authors_settings(args) -> bool:
    """Whether the command line is the authors' published run (`_AUTHORS_SETTINGS`)."""
    A = _AUTHORS_SETTINGS
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
        print(_seed_summary(logs, seeds, _authors_settings(args)))
    return 0


def _forster_aware(message: str, preprocessing: str) -> str:
    """K-FAC's advice to apply the Forster transform, rewritten when --forster was applied (the
    inputs then fell short of isotropic position: the fit's own report says by how much)."""
    if "forster_transform" not in message or "Forster" not in preprocessing:
        return message
    return (message.split("; put the inputs")[0] + "; --forster was applied but the inputs are not "
            f"exactly in isotropic position ({preprocessing.split('Forster', 1)[1].strip()})")


def cmd_check(args) -> int:
    """ntkngd check: isotropy report of every method (or the chosen ones); --devices K: also on
    the sharded backend's kernels over K devices."""
    _check_pattern_depth(args.pattern, args.depth)
    devices = _requested_devices(args)
    _enable_x64(True)
    import jax

    from . import analytic_kernels, isotropy, method_names, operator
    from .networks.empirical import empirical_kernels
    ds = _dataset(args)
    net = _net(args, ds.out_dim)
    xtr, xte, shape = _inputs(args, ds)
    kernels = {"infinite width": analytic_kernels(net, xtr, xte)}
    if devices is not None:
        from .sharded import make_mesh
        kernels[f"infinite width, sharded over {devices} devices"] = analytic_kernels(
            net, xtr, xte, mesh=make_mesh(devices))
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


# ------------------------------------------------- train --seeds: the summary over seeds, and the
# authors' published run of Karakida & Osawa's numpy code (their README: exact NGD, MNIST 0 vs 1,
# N = 100, N' = 50, 3 layers of width 4096, weight variance 2, no bias, lr 1) beside ours

# (label, value) as printed in the README of the authors' numpy code
_AUTHORS = {"train loss, step 0": 0.134341, "train loss, step 1": 0.000203484,
            "predicted train loss, step 1": 1.3e-16, "kept L1/L0": 0.000203484 / 0.134341,
            "train loss, step 2": 1.35e-7, "test loss, step 1": 0.00422796,
            "predicted test loss, step 1": 0.00436911,
            "|test - predicted| / predicted, step 1": abs(0.00422796 - 0.00436911) / 0.00436911,
            "train accuracy, step 1": 1.0, "test accuracy, step 1": 1.0}
_AUTHORS_SETTINGS = {"data": "mnist", "classes": (0, 1), "n_train": 100, "n_test": 50,
                     "depth": 3, "width": 4096, "w_var": 2.0, "b_std": 0.0, "lr": 1.0,
                     "method": "exact"}


def _seed_rows(log) -> dict:
    """The quantities of the authors' table for one run (MSE, exact NGD: step 1 is one step)."""
    out = {"train loss, step 0": log.train_loss[0], "train loss, step 1": log.train_loss[1],
           "predicted train loss, step 1": log.pred_inf_train_loss[1],
           "kept L1/L0": log.train_loss[1] / log.train_loss[0],
           "test loss, step 1": log.test_loss[1],
           "predicted test loss, step 1": log.pred_inf_test_loss[1],
           "|test - predicted| / predicted, step 1":
               abs(log.test_loss[1] - log.pred_inf_test_loss[1]) / log.pred_inf_test_loss[1],
           "train accuracy, step 1": log.train_acc[1], "test accuracy, step 1": log.test_acc[1]}
    if len(log.step) > 2:
        out["train loss, step 2"] = log.train_loss[2]
    return {k: float(v) for k, v in out.items()}


def _seed_summary(logs: Sequence, seeds: Sequence[int], authors: bool) -> str:
    """Mean, standard deviation, min and max of `_seed_rows` over the runs, with the authors' values
    beside them when `authors` (same settings; different images, same protocol)."""
    import numpy as np
    per = [_seed_rows(log) for log in logs]
    keys = [k for k in _AUTHORS if all(k in r for r in per)]
    head = (f"{logs[0].method} over {len(logs)} seeds {list(seeds)} (data draw and parameters): "
            f"predictions from the infinite-width kernels with the network's own f_0")
    cols = f"{'':40s} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}"
    cols += f" {'authors':>12}" if authors else ""
    lines = [head, cols]
    for k in keys:
        v = np.array([r[k] for r in per])
        line = f"{k:40s} {v.mean():10.4g} {v.std(ddof=1) if len(v) > 1 else 0.0:10.3g} " \
               f"{v.min():10.4g} {v.max():10.4g}"
        lines.append(line + (f" {_AUTHORS[k]:12.6g}" if authors else ""))
    if authors:
        lines.append("authors: Karakida & Osawa's numpy code (README), one run on their own draw "
                     "of MNIST; ours: the bundled t10k split, disjoint draws")
    return "\n".join(lines)
