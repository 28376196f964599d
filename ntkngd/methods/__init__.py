"""Registry of methods: name -> function (Kernels, damping) -> Operator.

Adding an approximation = one module here with such a function, plus an entry below."""
from __future__ import annotations

from typing import Callable

from . import block, kfac, unitwise
from .patterns import BlockPattern, block_pattern

OPERATORS: dict[str, Callable] = {
    "gd": block.gd,
    "exact": block.exact,
    "block_diagonal": block.block_diagonal,
    "block_tridiagonal": block.block_tridiagonal,
    "kfac": kfac.operator,
    "unit_wise": unitwise.operator,
}
ALIASES = {"bd": "block_diagonal", "btd": "block_tridiagonal", "ngd": "exact",
           "k-fac": "kfac", "unitwise": "unit_wise"}
METHODS: tuple[str, ...] = tuple(OPERATORS)

__all__ = ["OPERATORS", "METHODS", "ALIASES", "BlockPattern", "block_pattern", "canonical"]


def canonical(name: str) -> str:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in OPERATORS:
        raise ValueError(f"unknown method {name!r}; choose one of {list(OPERATORS)} "
                         "or pass ntkngd.block_pattern(S)")
    return key
