"""Load any model uldkit can score and generate with: plain, ULD or offset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.errors import ConfigError, ModelError
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.models.loading import load_model
from uldkit.training.run_dir import read_manifest
from uldkit.unlearning.catalog import get_method


def load_language_model(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    **settings: Any,
) -> LanguageModel:
    """A plain model directory gives a `CausalLM`; a directory whose manifest names another
    kind (e.g. "uld") is loaded by that method, with `settings` such as alpha or tau."""
    manifest = read_manifest(path)
    if manifest is None or manifest["kind"] == "plain":
        if settings:
            raise ModelError(
                f"'{path}' is a plain model; settings {sorted(settings)} do not apply to it"
            )
        model, tokenizer = load_model(path, device=device, dtype=dtype, allow_pickle=allow_pickle,
                                      trust_remote_code=trust_remote_code)
        return CausalLM(model, tokenizer, name=Path(path).name)
    method = get_method(manifest["kind"])
    return method.load(Path(path), manifest, device=device, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code, **settings)


def load_for_transformers(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    **settings: Any,
) -> tuple[Any, Any]:
    """(model, tokenizer) as transformers objects, for tools that take one (lm-eval's HFLM,
    `pipeline`): a plain model as it is; ULD and offset runs as their transformers-native
    model class, with `settings` (ULD: alpha, tau, filter, target; offset: scale, target)
    overriding the run's."""
    manifest = read_manifest(path)
    if manifest is None or manifest["kind"] == "plain":
        if settings:
            raise ModelError(
                f"'{path}' is a plain model; settings {sorted(settings)} do not apply to it"
            )
        return load_model(path, device=device, dtype=dtype, allow_pickle=allow_pickle,
                          trust_remote_code=trust_remote_code)
    from uldkit.uld.hf_model import KINDS, ULDForCausalLM

    if manifest["kind"] not in KINDS:
        raise ModelError(f"'{path}' is a {manifest['kind']} run, which has no transformers "
                         "model class; load it with load_language_model")
    model = ULDForCausalLM.from_pretrained(path, device=device, dtype=dtype,
                                           allow_pickle=allow_pickle,
                                           trust_remote_code=trust_remote_code, **settings)
    return model, model.combination.tokenizer


def as_language_model(model: Any, tokenizer: PreTrainedTokenizerBase | None = None,
                      name: str | None = None) -> LanguageModel:
    """What uldkit scores and generates with (a `LanguageModel`) over what a user holds: a
    transformers model with its tokenizer, a `ULDForCausalLM`, or a `LanguageModel`."""
    from uldkit.uld.hf_model import ULDForCausalLM

    if isinstance(model, ULDForCausalLM):
        return model.combination
    if isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise ConfigError("a transformers model needs its tokenizer")
        return CausalLM(model, tokenizer,
                        name=name or getattr(model, "name_or_path", "model") or "model")
    if isinstance(model, LanguageModel):
        return model
    raise ConfigError(f"expected a transformers model or a uldkit LanguageModel, not "
                      f"{type(model).__name__}")
