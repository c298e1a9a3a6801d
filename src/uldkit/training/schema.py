"""Typed settings: one dataclass field per setting, with its default, bounds and help.

A field declared with `param(...)` carries its help line and bounds in the field's
metadata; its type comes from the annotation (bool, int, float, str, an optional of one of
these, or a `Literal` of strings). From the dataclass alone this module checks and coerces
values (a string or float from the command line to the field's type), names unknown keys,
describes every setting for help output, and compares two resolved configurations. Method
hyperparameters (`uldkit.methods.hyperparameters`) and `TrainConfig` are built on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any, Literal, TypeVar

from uldkit.errors import ConfigError

T = TypeVar("T")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
) -> Any:
    """A dataclass field with help and bounds; without a default the setting is required."""
    metadata = {"help": help, "min": min, "max": max,
                "exclusive_min": exclusive_min, "exclusive_max": exclusive_max}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass, as checking and help output see it."""

    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None is a valid value
    default: Any  # MISSING when required
    help: str = ""
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def bounds(self) -> str:
        """The allowed values in a few characters: '> 0', '>= 1', 'in [0, 1)', 'one of a, b'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low, high = self.min, self.max
        if low is not None and high is not None:
            return (f"in {'(' if self.exclusive_min else '['}{_number(low)}, "
                    f"{_number(high)}{')' if self.exclusive_max else ']'}")
        if low is not None:
            return f"{'>' if self.exclusive_min else '>='} {_number(low)}"
        if high is not None:
            return f"{'<' if self.exclusive_max else '<='} {_number(high)}"
        return ""

    def check(self, value: Any, where: str) -> Any:
        """`value` brought to this setting's type, or ConfigError naming `where`."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{where} needs a value, not None")
        coerced = self._coerce(value, where)
        if self.choices and coerced not in self.choices:
            raise ConfigError(f"{where} must be {self.bounds()}, not {value!r}")
        if self.kind in (int, float) and not self._within(coerced):
            wanted = "positive" if (self.min == 0 and self.exclusive_min
                                    and self.max is None) else self.bounds()
            raise ConfigError(f"{where} must be {wanted}, not {value!r}")
        return coerced

    def _coerce(self, value: Any, where: str) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        if self.kind is str:
            if isinstance(value, str | os.PathLike):
                return os.fspath(value)
            raise ConfigError(f"{where} must be a string, not {value!r}")
        number = finite_number(value)
        if self.kind is int:
            if number is None or number != int(number):
                raise ConfigError(f"{where} must be an integer, not {value!r}")
            return int(number)
        if number is None:
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return number

    def _within(self, value: float) -> bool:
        if self.min is not None and (value <= self.min if self.exclusive_min else value < self.min):
            return False
        return not (self.max is not None
                    and (value >= self.max if self.exclusive_max else value > self.max))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: name, type, default (None when required), bounds, help."""
        return {"name": self.name, "type": self.kind.__name__ + (" or None" if self.optional
                                                                   else ""),
                "default": None if self.required else self.default,
                "required": self.required, "bounds": self.bounds(), "help": self.help}


@cache
def settings_of(cls: type) -> tuple[Setting, ...]:
    """Every field of the dataclass `cls` as a `Setting`, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        kind, optional, choices = _kind(hints[field.name], cls, field.name)
        meta = field.metadata
        out.append(Setting(
            name=field.name, kind=kind, optional=optional, default=field.default,
            help=meta.get("help", ""), min=meta.get("min"), max=meta.get("max"),
            exclusive_min=meta.get("exclusive_min", False),
            exclusive_max=meta.get("exclusive_max", False), choices=choices,
        ))
    return tuple(out)


def setting_of(cls: type, name: str) -> Setting:
    return next(s for s in settings_of(cls) if s.name == name)


def parse_settings(
    cls: type[T], values: Mapping[str, Any], *, noun: str, owner: str = "",
    also_known: Iterable[str] = (),
) -> T:
    """An instance of `cls` from `values` (missing keys take their defaults), each value
    checked and coerced. Errors read "{noun} 'key'{owner} must be ...": e.g. noun
    "hyperparameter", owner " of method 'npo'". `also_known` names keys that another part
    of the caller takes, listed among the known keys when one is unknown."""
    specs = settings_of(cls)
    known = [s.name for s in specs]
    unknown = sorted(set(values) - set(known))
    if unknown:
        listed = ", ".join(sorted(set(known) | set(also_known))) or "none"
        raise ConfigError(f"unknown {noun}(s) {', '.join(unknown)}{owner} (known: {listed})")
    resolved = {}
    for spec in specs:
        if spec.name in values:
            resolved[spec.name] = spec.check(values[spec.name], f"{noun} '{spec.name}'{owner}")
        elif spec.required:
            raise ConfigError(f"{noun} '{spec.name}'{owner} is required: {spec.help}")
    return cls(**resolved)


def check_fields(instance: Any, *, noun: str, owner: str = "") -> None:
    """Check and coerce every field of a dataclass instance in place (for `__post_init__`)."""
    for spec in settings_of(type(instance)):
        value = getattr(instance, spec.name)
        checked = spec.check(value, f"{noun} '{spec.name}'{owner}")
        if checked is not value:
            object.__setattr__(instance, spec.name, checked)


def first_difference(saved: Any, current: Any, path: str = "") -> str | None:
    """Where two resolved configurations (nested dicts, lists, values) first differ, as
    "key.sub: saved -> current", or None when they are equal (1 and 1.0 are equal)."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in list(saved) + [k for k in current if k not in saved]:
            where = f"{path}.{key}" if path else str(key)
            if key not in saved or key not in current:
                missing = "(absent)"
                return (f"{where}: {saved.get(key, missing)!r} -> "
                        f"{current.get(key, missing)!r}")
            found = first_difference(saved[key], current[key], where)
            if found:
                return found
        return None
    if (isinstance(saved, list | tuple) and isinstance(current, list | tuple)
            and len(saved) == len(current)):
        for index, (a, b) in enumerate(zip(saved, current)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    if saved == current and isinstance(saved, bool) == isinstance(current, bool):
        return None
    return f"{path or 'value'}: {saved!r} -> {current!r}"


def finite_number(value: Any) -> float | None:
    """`value` as a finite float (numbers and numeric strings), else None; never a bool."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _kind(hint: Any, cls: type, name: str) -> tuple[type, bool, tuple[str, ...]]:
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{cls.__name__}.{name}: a setting has one type (or it and None)")
        hint, args = rest[0], typing.get_args(rest[0])
    if typing.get_origin(hint) is Literal:
        if not all(isinstance(a, str) for a in args):
            raise TypeError(f"{cls.__name__}.{name}: a Literal setting takes strings")
        return str, optional, tuple(args)
    if hint not in (bool, int, float, str):
        raise TypeError(f"{cls.__name__}.{name}: a setting is a bool, int, float or str, "
                        f"not {hint}")
    return hint, optional, ()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
