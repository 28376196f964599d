"""Sizes of the figure runs. `quick` fits the README's 10-minute budget on 2 cores (the 8 x 8
digits); `paper` is the paper's scale and data (N = 100, width 4096, MNIST 0 vs 1 drawn from the
test split bundled with ntkngd, or from `data_dir`); `tiny` is for tests."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Profile:
    name: str
    n_train: int              # training points (binary 0-vs-1 digits / MNIST, targets +-0.5)
    n_test: int
    width: int                # hidden width of the finite networks
    depth: int = 3
    steps: int = 8            # training steps in the convergence figures
    gap_widths: tuple = (64, 128, 256, 512, 1024)
    seeds: int = 5            # networks per finite-width marker (mean and spread)
    lr_fractions: tuple = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    max_depth: int = 12       # block tri-diagonal alpha against depth
    kfac_dim: int = 20        # input dimension of the K-FAC N/d sweep
    kfac_points: int = 9      # its values of N, geometric from d/4 to 4 d
    unit_widths: tuple = (64, 128, 256, 512, 1024)
    ce_classes: int = 3       # cross-entropy figure: classes of digits
    ce_n_train: int = 30
    dtype: str = "float64"
    data: str = "digits"      # "digits" (scikit-learn's 8 x 8) or "mnist"
    data_dir: Optional[str] = None   # MNIST files (IDX or npz; implies data="mnist"); None with
    #                                  data="mnist": the test split bundled with ntkngd

    replace = dataclasses.replace

    @property
    def mnist(self) -> bool:
        """Whether the figures' data are MNIST (bundled or from data_dir)."""
        return self.data == "mnist" or self.data_dir is not None

    def config(self) -> dict:
        """Every field as a dict (part of the cache key)."""
        return dataclasses.asdict(self)


PROFILES = {
    "tiny": Profile("tiny", n_train=10, n_test=10, width=64, steps=3, gap_widths=(32, 128),
                    seeds=1, lr_fractions=(0.5, 1.0, 1.5), max_depth=6, kfac_dim=6, kfac_points=5,
                    unit_widths=(32, 128), ce_n_train=9, ce_classes=3),
    "quick": Profile("quick", n_train=40, n_test=100, width=1024, steps=8,
                     gap_widths=(64, 128, 256, 512, 1024, 2048)),
    "paper": Profile("paper", n_train=100, n_test=100, width=4096, steps=10,
                     gap_widths=(256, 512, 1024, 2048, 4096),
                     unit_widths=(256, 512, 1024, 2048, 4096), ce_n_train=100, data="mnist"),
}


def get(name: str, **overrides) -> Profile:
    """The named profile, with the given fields replaced (None values ignored)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name].replace(**{k: v for k, v in overrides.items() if v is not None})
