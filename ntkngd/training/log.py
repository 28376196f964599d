"""The training log of `ntkngd.train`: one type for every loss, method and network."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class TrainLog:
    """Per step t = 0..T: measured losses and accuracies, and the losses predicted from the
    empirical kernels at initialization (`pred_emp_*`) and the infinite-width kernels with the
    network's own f_0 (`pred_inf_*`, NaN where the method has none). alpha: the empirical
    operator's (MSE) or the block-pattern form's reference (None where none). Without a constant
    operator also `pred_alpha`, `pred_*_acc` and per step t < T `alpha_fit`, `deviation`,
    `deviation_ref` of the linearized step from alpha H^+ r (`observers.isotropy_fit`)."""

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
    loss: str = "mse"

    @property
    def is_mse(self) -> bool:
        """Whether this is an MSE run with a constant operator (no per-step isotropy measured)."""
        return self.loss == "mse" and not self.measured

    @property
    def measured(self) -> bool:
        """Whether the per-step isotropy (alpha_fit, deviation) was measured."""
        return self.alpha_fit is not None

    def rel_error(self, which: str = "emp") -> np.ndarray:
        """|measured - predicted| / predicted training loss per step (which: "emp" or "inf")."""
        pred = self.pred_emp_train_loss if which == "emp" else self.pred_inf_train_loss
        return np.abs(self.train_loss - pred) / np.abs(pred)

    def table(self) -> str:
        """The log as a text table: one row per step (see the class docstring), then the notes."""
        measured = self.measured
        alphas = (f"reference alpha {_fmt(self.alpha)}, prediction alpha {_fmt(self.pred_alpha)}"
                  if measured else f"measured alpha (empirical operator) {_fmt(self.alpha)}")
        names = ["train", "pred emp", "pred inf", "test", "pred emp", "pred inf"]
        head = (f"{self.method}{_LABELS.get(self.loss, f' ({self.loss})')}: lr {self.lr:.6g}, "
                f"damping {self.damping:.3g}, {alphas}\n{'step':>4} "
                + " ".join(f"{c:>11}" for c in names) + f" {'acc tr':>7} {'acc te':>7}"
                + (f" {'alpha_fit':>10} {'dev':>9} {'dev ref':>9}" if measured else ""))
        cols = (self.train_loss, self.pred_emp_train_loss, self.pred_inf_train_loss,
                self.test_loss, self.pred_emp_test_loss, self.pred_inf_test_loss)
        rows = []
        for i, t in enumerate(self.step):
            row = f"{int(t):>4} " + " ".join(f"{c[i]:11.4e}" for c in cols) + \
                f" {self.train_acc[i]:7.3f} {self.test_acc[i]:7.3f}"
            if measured and i < len(self.step) - 1:
                row += (f" {self.alpha_fit[i]:10.4g} {self.deviation[i]:9.2e} "
                        f"{self.deviation_ref[i]:9.2e}")
            rows.append(row)
        return "\n".join([head] + rows + [f"  note: {n}" for n in self.notes])


_LABELS = {"mse": "", "softmax_cross_entropy": " (cross-entropy)",
           "sigmoid_binary_cross_entropy": " (binary cross-entropy)"}


def _fmt(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:.6g}"
