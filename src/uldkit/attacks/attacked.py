"""What every attack on an unlearned model is given: the model, where to write, the forget
set it probes and how answers are generated, checked the same way for each attack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from uldkit.errors import ConfigError


@dataclass
class AttackedModel:
    model: str  # the unlearned model directory: plain, ULD or offset
    out: str
    data: str = "synthetic"
    forget: str = "forget10"
    people: int = 40
    data_seed: int = 0
    original: str | None = None  # the original target; default: the one the manifest names
    device: str | None = None
    max_new_tokens: int | None = None  # greedy answer cap; None: TOFU's (200 tokens in all)
    eval_batch_size: int = 16
    max_length: int = 128

    # Settings of the attack itself that must be at least 1 (besides the shared ones).
    COUNTS: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        for name in ("eval_batch_size", "max_length", *self.COUNTS):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        if not Path(self.model).is_dir():
            raise ConfigError(f"model directory '{self.model}' does not exist")
        if self.original is not None and not Path(self.original).is_dir():
            raise ConfigError(f"original model directory '{self.original}' does not exist")
