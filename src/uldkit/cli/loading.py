"""Every command loads its models through the front door, `uldkit.load`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uldkit.models.lm import LanguageModel


def load_language_model(path: str | os.PathLike, **options: Any) -> LanguageModel:
    """`uldkit.load(path, **options)` as what uldkit's evaluations and generation take: a
    plain model as a `CausalLM` named after its directory, a ULD or offset run as its
    logit combination."""
    import uldkit
    from uldkit.unlearning.load import as_language_model

    model, tokenizer = uldkit.load(path, **options)
    return as_language_model(model, tokenizer, name=Path(path).name)
