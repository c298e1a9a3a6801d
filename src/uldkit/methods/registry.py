"""Methods registered by name: a new method is one new file in this package."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager

from uldkit.errors import ConfigError
from uldkit.methods.base import UnlearningMethod
from uldkit.methods.hyperparameters import Hyperparameters
from uldkit.training.schema import parse_settings
from uldkit.training.trainer import TrainConfig

_METHODS: dict[str, type[UnlearningMethod]] = {}
_NOT_METHODS = {"base", "registry", "editing", "hyperparameters", "activations"}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Add a method under `cls.name` (usable as a class decorator). Its declaration is
    checked here, so a mistake shows when the module is imported: a `schema` dataclass
    whose defaults are in bounds, and `default_training` keys that TrainConfig knows."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise RuntimeError(f"two methods are named '{cls.name}'")
    if not issubclass(cls.schema, Hyperparameters):
        raise TypeError(f"{cls.__name__}.schema must derive from Hyperparameters")
    if not any(s.required for s in cls.schema.settings()):
        cls.schema()  # checks every default against its bounds
    parse_settings(TrainConfig, cls.default_training, noun="training setting",
                   owner=f" in {cls.__name__}.default_training")
    _METHODS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove the method registered as `name` (a method added for a test or a session)."""
    _METHODS.pop(name, None)


@contextmanager
def registered(cls: type[UnlearningMethod]) -> Iterator[type[UnlearningMethod]]:
    """`cls` registered for the duration of a `with` block, then removed."""
    register(cls)
    try:
        yield cls
    finally:
        unregister(cls.name)


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
