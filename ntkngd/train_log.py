"""The training log of `ntkngd.train` for every loss and network (one type; `CETrainLog` is an
alias kept for v0.1 callers of `ntkngd.ce_engine.train_ce`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class TrainLog:
    """Per step t = 0..T: measured train/test loss and accuracy of the finite network, and the
    losses predicted from the empirical kernels at initialization (`pred_emp_*`) and from the
    infinite-width analytic kernels with the network's own f_0 (`pred_inf_*`; NaN where that method
    has no such prediction). `alpha`: MSE, the empirical operator's alpha at initialization;
    other losses, the reference alpha of the block-pattern form (None where there is none).

    Losses other than MSE (`ntkngd.ce_engine.train_ce`) also fill, else None: `pred_alpha`, the
    predicted accuracies `pred_*_acc`, and per step t = 0..T-1 `alpha_fit`, `deviation` and
    `deviation_ref` of the linearized step from alpha H^+ r (`ce_isotropy`; for K-FAC / unit-wise
    the predictions are exact NGD at lr * pred_alpha, training set only); `notes`."""

    method: str
    lr: float
    damping: float
    alpha: Optional[float]
    step: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    pred_emp_train_loss: np.ndarray
    pred_emp_test_loss: np.ndarray
    pred_inf_train_loss: np.ndarray
    pred_inf_test_loss: np.ndarray
    pred_alpha: Optional[float] = None
    pred_emp_train_acc: Optional[np.ndarray] = None
    pred_emp_test_acc: Optional[np.ndarray] = None
    pred_inf_train_acc: Optional[np.ndarray] = None
    pred_inf_test_acc: Optional[np.ndarray] = None
    alpha_fit: Optional[np.ndarray] = None
    deviation: Optional[np.ndarray] = None
    deviation_ref: Optional[np.ndarray] = None
    notes: tuple = field(default=())

    @property
    def is_mse(self) -> bool:
        """Whether this is an MSE log (no per-step isotropy measurements)."""
        return self.alpha_fit is None

    def rel_error(self, which: str = "emp") -> np.ndarray:
        """|measured - predicted| / predicted training loss per step (which: "emp" or "inf")."""
        pred = self.pred_emp_train_loss if which == "emp" else self.pred_inf_train_loss
        return np.abs(self.train_loss - pred) / np.abs(pred)

    def table(self) -> str:
        """The log as a text table: one row per step (see the class docstring), then the notes."""
        return _mse_table(self) if self.is_mse else _loss_table(self)


def _fmt(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:.6g}"


def _mse_table(log: TrainLog) -> str:
    head = (f"{log.method}: lr {log.lr:.6g}, damping {log.damping:.3g}, measured alpha "
            f"(empirical operator) {_fmt(log.alpha)}\n"
            f"{'step':>4} {'train':>11} {'pred emp':>11} {'pred inf':>11} {'test':>11} "
            f"{'pred emp':>11} {'pred inf':>11} {'acc tr':>7} {'acc te':>7}")
    rows = [f"{int(t):>4} {a:11.4e} {b:11.4e} {c:11.4e} {d:11.4e} {e:11.4e} {f:11.4e} "
            f"{g:7.3f} {h:7.3f}"
            for t, a, b, c, d, e, f, g, h in zip(
                log.step, log.train_loss, log.pred_emp_train_loss, log.pred_inf_train_loss,
                log.test_loss, log.pred_emp_test_loss, log.pred_inf_test_loss,
                log.train_acc, log.test_acc)]
    return "\n".join([head] + rows + [f"  note: {n}" for n in log.notes])


def _loss_table(log: TrainLog) -> str:
    head = (f"{log.method} (cross-entropy): lr {log.lr:.6g}, damping {log.damping:.3g}, "
            f"reference alpha {_fmt(log.alpha)}, prediction alpha {_fmt(log.pred_alpha)}\n"
            f"{'step':>4} {'train':>10} {'pred emp':>10} {'pred inf':>10} {'test':>10} "
            f"{'pred emp':>10} {'pred inf':>10} {'acc tr':>6} {'acc te':>6} "
            f"{'alpha_fit':>10} {'dev':>9} {'dev ref':>9}")
    rows = []
    T = len(log.step)
    for i in range(T):
        tail = (f" {log.alpha_fit[i]:10.4g} {log.deviation[i]:9.2e} "
                f"{log.deviation_ref[i]:9.2e}") if i < T - 1 else ""
        rows.append(f"{int(log.step[i]):>4} {log.train_loss[i]:10.4e} "
                    f"{log.pred_emp_train_loss[i]:10.4e} {log.pred_inf_train_loss[i]:10.4e} "
                    f"{log.test_loss[i]:10.4e} {log.pred_emp_test_loss[i]:10.4e} "
                    f"{log.pred_inf_test_loss[i]:10.4e} {log.train_acc[i]:6.3f} "
                    f"{log.test_acc[i]:6.3f}" + tail)
    return "\n".join([head] + rows + [f"  note: {n}" for n in log.notes])


CETrainLog = TrainLog
