"""The method registry: one `Method` per approximation, registered once, used by every stage.

A method sees a network only through `Kernels` (ntkngd.networks): per-layer blocks and, at finite
width, patches Ht_l (N, S_l, k_l) and backprops D_l (N C, S_l, M_l) (S = 1: dense layers), so one
implementation serves MLPs and CNNs. A Method carries
  operator(K, damping) -> Operator          the MSE function-space operator,
  signals(K, damping, f, y, loss) -> [A_l]  d[W_l; b_l] = sum_(n,s) Ht_l[n, s]^T A_l[n, s],
  update(K, damping, f, y, loss) -> [dW_l]  the directions directly instead (K-FAC, diagonal, ...),
  duals(K, damping, f, y, loss) -> v        (L, N C), d theta_l = J_l^T v_l (gd, patterns),
  kind                                      "gd", "pattern" (`pattern(depth)` gives S) or "layer",
  default_damping(K), nonlinear             rho for damping=None; a step not linear in r.
`register_method` makes one available by name everywhere (operator, predict, ngd_direction,
ngd_transform, train, the CLI, the figures); `pattern_method(name, S_of_depth)` builds one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Union

import numpy as np

from .patterns import BlockPattern, block_pattern

__all__ = ["Method", "REGISTRY", "METHODS", "CURVATURE_METHODS", "ALIASES", "BlockPattern", "block_pattern",
           "canonical", "get_method", "register_method", "pattern_method", "method_names",
           "OPERATORS"]


@dataclass(frozen=True, eq=False)
class Method:
    """One approximation (module docstring). Hashable by identity (a static jit argument)."""

    name: str
    operator: Callable
    signals: Callable
    kind: str = "layer"
    pattern: Optional[Callable] = None
    default_damping: Optional[Callable] = None
    duals: Optional[Callable] = None
    update: Optional[Callable] = None
    nonlinear: bool = False

    def resolve_damping(self, K, damping):
        """damping=None -> the method's default (0 unless it defines default_damping)."""
        if damping is not None:
            return damping
        return 0.0 if self.default_damping is None else self.default_damping(K)

    def directions(self, K, damping, f, y, loss) -> list:
        """The augmented per-layer directions d[W_l; b_l] (k_l, M_l) on finite-width kernels K
        at outputs f: `update` where given, else the contraction of the signals."""
        if self.update is not None:
            return list(self.update(K, damping, f, y, loss))
        from ..networks.empirical import contract
        return list(contract(K.layer_inputs_train, self.signals(K, damping, f, y, loss)))

    def __repr__(self) -> str:
        return f"Method({self.name!r})"


REGISTRY: dict[str, Method] = {}
ALIASES = {"bd": "block_diagonal", "btd": "block_tridiagonal", "ngd": "exact",
           "k-fac": "kfac", "unitwise": "unit_wise"}


_BUILTIN: set = set()   # names and aliases of the built-in methods (filled once, below)


def register_method(method: Method, *aliases: str, replace: bool = False) -> Method:
    """Register `method` under its name (and aliases); returns it. A name or alias of a built-in
    method (exact, kfac, btd, ...) is refused with a ValueError unless replace=True: a plugin
    must not silently change what `exact` means."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method needs an ntkngd Method, got {type(method).__name__}")
    for key in (method.name.lower(),) + tuple(a.lower() for a in aliases):
        if key in _BUILTIN and not replace:
            raise ValueError(f"register_method: {key!r} is a built-in method name or alias; "
                             "choose another name (or pass replace=True to override it)")
    REGISTRY[method.name.lower()] = method
    for a in aliases:
        ALIASES[a.lower()] = method.name.lower()
    return method


def method_names() -> tuple[str, ...]:
    """Names of every registered method, built-ins first."""
    return tuple(REGISTRY)


def canonical(name: str) -> str:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {list(REGISTRY)} "
                         "or pass ntkngd.block_pattern(S)")
    return key


def pattern_method(name: str, pattern_of_depth: Callable[[int], np.ndarray]) -> Method:
    """A Method from a layer pattern S(depth) (0/1, symmetric, unit diagonal): operator and update
    both from the pattern's dual solve (ntkngd.methods.block)."""
    from . import block

    def pattern(depth):
        S = pattern_of_depth(depth)
        return S if isinstance(S, BlockPattern) else block_pattern(S, name)

    return Method(name, lambda K, rho: block.pattern_operator(K, pattern(K.depth), rho, name),
                  lambda K, rho, f, y, loss: block.pattern_signals(K, pattern(K.depth), rho, f,
                                                                   y, loss),
                  kind="pattern", pattern=pattern,
                  duals=lambda K, rho, f, y, loss: block.pattern_dual_vectors(
                      K, pattern(K.depth), rho, f, y, loss))


@lru_cache(maxsize=None)
def _from_pattern(bp: BlockPattern) -> Method:
    return pattern_method(bp.name, lambda depth: bp)


def get_method(method: Union[str, BlockPattern, Method]) -> Method:
    """The registered Method for a name/alias, a Method, or one built from a BlockPattern."""
    if isinstance(method, Method):
        return method
    if isinstance(method, BlockPattern):
        return _from_pattern(method)
    return REGISTRY[canonical(method)]


def _register_builtins() -> None:
    from . import block, diagonal, ekfac, kfac, patterns, shampoo, unitwise
    register_method(Method("gd", block.gd, block.gd_signals, kind="gd", duals=block.gd_duals))
    register_method(pattern_method("exact", patterns.full))
    register_method(pattern_method("block_diagonal", patterns.diagonal))
    register_method(pattern_method("block_tridiagonal", patterns.tridiagonal))
    register_method(Method("kfac", kfac.operator, kfac.signals, update=kfac.update))
    register_method(Method("unit_wise", unitwise.operator, unitwise.signals,
                           default_damping=unitwise.default_damping))
    register_method(Method("diagonal", diagonal.operator, diagonal.signals,
                           update=diagonal.update), "diag")
    register_method(Method("ekfac", ekfac.operator, ekfac.signals, update=ekfac.update),
                    "e-kfac")
    register_method(shampoo.method(0.25, "shampoo"))


_register_builtins()
# today's per-layer preconditioners (docs/theory.md section 10): registered, but not among the
# paper's methods that METHODS lists (shampoo has no fixed operator; the diagonal Fisher's
# infinite-width operator is a Monte-Carlo estimate)
CURVATURE_METHODS: tuple[str, ...] = ("diagonal", "ekfac", "shampoo")
METHODS: tuple[str, ...] = tuple(m for m in method_names() if m not in CURVATURE_METHODS)
_BUILTIN.update(REGISTRY, ALIASES)


class _OperatorView(dict):
    """OPERATORS[name] -> the registered operator function (kept for v0.1 callers)."""

    def __missing__(self, key):
        return get_method(key).operator


OPERATORS = _OperatorView()
