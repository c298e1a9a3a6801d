"""A method's hyperparameters: one frozen dataclass per method, with defaults, bounds and help.

A method declares `schema = ItsHyperparameters`; every field is a `param(default, help,
min=..., max=...)`. Checking (types, bounds, unknown keys), the `--param KEY=VALUE` option,
`uldkit methods NAME`, the saved run_config.json and the demo's settings all come from that
one class. Shared parts compose by inheritance: `LoraHyperparameters` (train LoRA adapters
instead of all weights), `ForgetWeighted` (+ forget_weight), `RetainWeighted`
(+ retain_weight, for methods with a retain term).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from uldkit.training.schema import Setting, check_fields, param, parse_settings, settings_of

H = TypeVar("H", bound="Hyperparameters")


@dataclass(frozen=True)
class Hyperparameters:
    """The base of every schema (no fields). Values are checked and coerced on
    construction; `parse` builds one from user input with errors that name the method."""

    def __post_init__(self) -> None:
        check_fields(self, noun="hyperparameter", owner=f" of {type(self).__name__}")

    @classmethod
    def parse(cls: type[H], values: Mapping[str, Any], method: str,
              also_known: Iterable[str] = ()) -> H:
        """From KEY=VALUE input (strings allowed); ConfigError names the method and key."""
        return parse_settings(cls, values, noun="hyperparameter", owner=f" of method '{method}'",
                              also_known=also_known)

    @classmethod
    def settings(cls) -> tuple[Setting, ...]:
        return settings_of(cls)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key and its default (None for a required one)."""
        return {s.name: None if s.required else s.default for s in settings_of(cls)}

    @classmethod
    def completed(cls, recorded: Mapping[str, Any]) -> dict[str, Any]:
        """A record of these hyperparameters with each key it lacks set to its default: runs
        made before the schemas recorded only the values the user gave."""
        return {**cls.defaults(), **recorded}

    def to_dict(self) -> dict[str, Any]:
        """The resolved values, under the keys run_config.json and manifests record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def changed(self) -> frozenset[str]:
        """The keys whose value differs from the default."""
        defaults = self.defaults()
        return frozenset(k for k, v in self.to_dict().items() if v != defaults[k])


# TOFU's LoRA settings (config/forget_lora.yaml): r 8, alpha 32, dropout 0.05.
@dataclass(frozen=True)
class LoraHyperparameters(Hyperparameters):
    lora: bool = param(False, "Train LoRA adapters (merged when saved) instead of all weights.")
    lora_r: int = param(8, "LoRA rank.", min=1)
    lora_alpha: int = param(32, "LoRA scaling alpha.", min=0, exclusive_min=True)
    lora_dropout: float = param(0.05, "LoRA dropout.", min=0, max=1, exclusive_max=True)


@dataclass(frozen=True)
class ForgetWeighted(LoraHyperparameters):
    forget_weight: float = param(1.0, "Weight of the forget loss.", min=0)


@dataclass(frozen=True)
class RetainWeighted(ForgetWeighted):
    retain_weight: float = param(1.0, "Weight of the retain loss (0: none).", min=0)
