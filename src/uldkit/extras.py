"""uldkit's optional features, the packages each needs, and the one line a user reads when
one is missing: what to `pip install`.

Every import of an optional package goes through `require` (or is caught by the CLI via
`extra_for_module`), so a missing extra never ends in a `ModuleNotFoundError` traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

from uldkit.errors import MissingExtraError


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # import names, the same as their names on PyPI
    unlocks: str

    @property
    def install(self) -> str:
        return f'pip install "uldkit[{self.name}]"'


EXTRAS: tuple[Extra, ...] = (
    Extra("serve", ("fastapi", "uvicorn", "httpx"),
          "uldkit serve: the OpenAI-compatible HTTP API and the playground page"),
    Extra("datasets", ("datasets",),
          "--data with a Hugging Face hub dataset or a save_to_disk folder; from_hf_dataset"),
    Extra("test", ("pytest", "hypothesis", "selenium", "openai"),
          "the test suite (the playground's browser test also needs Chromium and chromedriver)"),
)
BY_NAME = {extra.name: extra for extra in EXTRAS}


def require(extra_name: str, feature: str) -> None:
    """Import every package of `extra_name`, or raise one line naming what to install."""
    extra = BY_NAME[extra_name]
    for module in extra.modules:
        import_optional(module, extra_name, feature)


def import_optional(module: str, extra_name: str, feature: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing(module, extra_name, feature) from None


def missing(module: str, extra_name: str, feature: str) -> MissingExtraError:
    return MissingExtraError(
        f"{feature} needs the '{module}' package, which is not installed: "
        f"{BY_NAME[extra_name].install}")


def extra_for_module(module: str) -> Extra | None:
    """The extra that provides top-level package `module` (for a stray ModuleNotFoundError)."""
    top = module.split(".")[0]
    for extra in EXTRAS:
        if top in extra.modules and extra.name != "test":
            return extra
    return None


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
