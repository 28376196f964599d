"""Keep `neural_tangents.experimental` (its TensorFlow port) out of `import neural_tangents`.

neural-tangents 0.6.5 imports `experimental` at package import, which loads TensorFlow: about 3-6 s
and several lines of absl / cuDNN log noise on stderr, for a subpackage ntkngd never uses. Before
neural-tangents is first imported we register a placeholder module under that name; on the first
attribute access (e.g. `neural_tangents.experimental.empirical_ntk_fn_tf`) the placeholder imports
the real subpackage, puts it in its place and forwards the access, so a user still gets it.
"""
from __future__ import annotations

import importlib
import sys
import types

_NAME = "neural_tangents.experimental"


class _LazyExperimental(types.ModuleType):
    """Stands in for neural_tangents.experimental until something is read from it."""

    def _load(self) -> types.ModuleType:
        if sys.modules.get(_NAME) is self:
            del sys.modules[_NAME]
        try:
            real = importlib.import_module(_NAME)
        except ModuleNotFoundError as err:   # the lean environment: no TensorFlow / tf2jax
            sys.modules.setdefault(_NAME, self)
            raise ImportError(
                f"{_NAME} (neural-tangents' TensorFlow port) needs {err.name!r}, which the lean "
                "environment of requirements.lock leaves out; ntkngd never uses it. To get it: "
                "pip install tensorflow==2.19.1 tf2jax==0.3.7 (or install ntkngd with `pip "
                "install .`, which pulls neural-tangents with all its requirements).") from err
        parent = sys.modules.get("neural_tangents")
        if parent is not None:
            parent.experimental = real
        self.__dict__["_real"] = real
        return real

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name not in ("__all__", "__path__"):
            raise AttributeError(name)
        real = self.__dict__.get("_real") or self._load()
        return getattr(real, name)

    def __dir__(self):
        real = self.__dict__.get("_real") or self._load()
        return dir(real)


def install() -> None:
    """Register the placeholder unless neural-tangents (or the subpackage) is already imported."""
    if "neural_tangents" in sys.modules or _NAME in sys.modules:
        return
    sys.modules[_NAME] = _LazyExperimental(_NAME, "placeholder: imported on first use")
