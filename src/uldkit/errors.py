"""The one error family uldkit raises for problems a user can fix.

The CLI turns any of these into a single readable line and a non-zero exit; anything else
is a bug and keeps its traceback. Optional features (extras) are listed here too, with the
one line a user reads when one is missing: what to `pip install`. Every import of an optional
package goes through `require` / `import_optional` (or is caught by the CLI via
`extra_for_module`), so a missing extra never ends in a `ModuleNotFoundError` traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType


class UldkitError(Exception):
    """Base class: a problem with the user's input, files or settings."""


class DataError(UldkitError):
    """A dataset file or record is missing, malformed, or has the wrong fields."""


class ModelError(UldkitError):
    """A model directory is missing, unsafe to load, or does not match what it is used with."""


class ConfigError(UldkitError):
    """A setting is out of range or contradicts another."""


class TrainingError(UldkitError):
    """Training could not go on (for example, the loss became non-finite)."""


class MissingExtraError(UldkitError):
    """An optional feature was asked for whose extra (`pip install "uldkit[NAME]"`) is absent."""


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # import names (optimum.quanto is PyPI's optimum-quanto)
    unlocks: str

    @property
    def install(self) -> str:
        return f'pip install "uldkit[{self.name}]"'


EXTRAS: tuple[Extra, ...] = (
    Extra("serve", ("fastapi", "starlette", "uvicorn", "httpx"),
          "uldkit serve: the OpenAI-compatible HTTP API and the playground page"),
    Extra("datasets", ("datasets",),
          "--data with a Hugging Face hub dataset or a save_to_disk folder; from_hf_dataset"),
    Extra("harness", ("lm_eval",),
          "uldkit eval harness: lm-evaluation-harness tasks on any model or unlearned run"),
    Extra("gguf", ("gguf",), "uldkit convert gguf and --model FILE.gguf: GGUF files in"),
    Extra("quantize", ("optimum.quanto",),
          "uldkit attack quantize: 4- and 8-bit weights of an unlearned model (optimum-quanto)"),
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
        if top in {m.split(".")[0] for m in extra.modules} and extra.name != "test":
            return extra
    return None


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
