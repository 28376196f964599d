"""Import-on-first-use helpers: keep `import ntkngd` and `ntkngd --help` free of JAX and
neural-tangents until a computation needs them."""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable


class LazyModule:
    """Stands for the module `name`; the first attribute access imports it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_jit(fn: Callable | None = None, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fn, **jit_kwargs)`, built on the first call (so defining it does not import JAX).
    Use as @lazy_jit or @lazy_jit(static_argnums=0)."""
    if fn is None:
        return functools.partial(lazy_jit, **jit_kwargs)
    compiled: list = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not compiled:
            import jax
            compiled.append(jax.jit(fn, **jit_kwargs))
        return compiled[0](*args, **kwargs)
    return wrapper


def lazy_exports(namespace: dict, exports: dict) -> tuple[Callable, Callable]:
    """PEP 562 `__getattr__` and `__dir__` for a module whose public names live in submodules.

    namespace: the module's globals(); exports: public name -> (relative module, attribute in it;
    None for the module itself). A name is imported on first access and then cached in namespace."""
    package = namespace["__package__"]
    module_name = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        source, attr = exports[name]
        module = importlib.import_module(source, package)
        value = module if attr is None else getattr(module, attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
