"""Summaries of one training configuration over several seeds (data draw and parameters), and the
authors' published run of Karakida & Osawa's numpy code (their README: exact NGD, MNIST 0 vs 1,
N = 100, N' = 50, 3 layers of width 4096, weight variance 2, no bias, lr 1) beside ours."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .training.log import TrainLog

# (label, value) as printed in the README of the authors' numpy code
AUTHORS = {"train loss, step 0": 0.134341, "train loss, step 1": 0.000203484,
           "predicted train loss, step 1": 1.3e-16, "kept L1/L0": 0.000203484 / 0.134341,
           "train loss, step 2": 1.35e-7, "test loss, step 1": 0.00422796,
           "predicted test loss, step 1": 0.00436911,
           "|test - predicted| / predicted, step 1": abs(0.00422796 - 0.00436911) / 0.00436911,
           "train accuracy, step 1": 1.0, "test accuracy, step 1": 1.0}
AUTHORS_SETTINGS = {"data": "mnist", "classes": (0, 1), "n_train": 100, "n_test": 50,
                    "depth": 3, "width": 4096, "w_var": 2.0, "b_std": 0.0, "lr": 1.0,
                    "method": "exact"}


def rows(log: TrainLog) -> dict:
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


def summary(logs: Sequence[TrainLog], seeds: Sequence[int], authors: bool) -> str:
    """Mean, standard deviation, min and max of `rows` over the runs, with the authors' values
    beside them when `authors` (same settings; different images, same protocol)."""
    per = [rows(log) for log in logs]
    keys = [k for k in AUTHORS if all(k in r for r in per)]
    head = (f"{logs[0].method} over {len(logs)} seeds {list(seeds)} (data draw and parameters): "
            f"predictions from the infinite-width kernels with the network's own f_0")
    cols = f"{'':40s} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}"
    cols += f" {'authors':>12}" if authors else ""
    lines = [head, cols]
    for k in keys:
        v = np.array([r[k] for r in per])
        line = f"{k:40s} {v.mean():10.4g} {v.std(ddof=1) if len(v) > 1 else 0.0:10.3g} " \
               f"{v.min():10.4g} {v.max():10.4g}"
        lines.append(line + (f" {AUTHORS[k]:12.6g}" if authors else ""))
    if authors:
        lines.append("authors: Karakida & Osawa's numpy code (README), one run on their own draw "
                     "of MNIST; ours: the bundled t10k split, disjoint draws")
    return "\n".join(lines)
