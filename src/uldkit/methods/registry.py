"""Methods registered by name: a new method is one new file in this package."""

from __future__ import annotations

import importlib
import pkgutil

from uldkit.errors import ConfigError
from uldkit.methods.base import UnlearningMethod

_METHODS: dict[str, type[UnlearningMethod]] = {}
_NOT_METHODS = {"base", "registry", "editing"}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise RuntimeError(f"two methods are named '{cls.name}'")
    _METHODS[cls.name] = cls
    return cls


def _discover() -> None:
    import uldkit.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS and not info.name.startswith("_"):
            importlib.import_module(f"uldkit.methods.{info.name}")


def all_methods() -> dict[str, type[UnlearningMethod]]:
    _discover()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type[UnlearningMethod]:
    methods = all_methods()
    if name not in methods:
        raise ConfigError(f"unknown method '{name}'; known methods: {', '.join(methods)}")
    return methods[name]
