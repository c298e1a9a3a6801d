"""Load and save causal language models: safetensors only unless the user opts in."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from uldkit.errors import ModelError
from uldkit.models.model_path import check_model_name


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def resolve_placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """CUDA in bf16 when present, else CPU in float32; either can be forced."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' asked for, but no CUDA device is available")
    if dtype in (None, "auto"):
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    try:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype '{dtype}'; choose float32, bfloat16 or float16") from None
    return Placement(torch.device(device), torch_dtype)


def load_tokenizer(
    path: str | os.PathLike, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer saved at `path`. One without a pad token pads with its EOS token
    (padding is always masked out, so no score changes); one with neither is a ModelError."""
    check_model_name(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a tokenizer from '{path}': {_first_line(err)}") from None
    if tokenizer.pad_token_id is None:
        # Scoring masks padding out, so any id works as pad; EOS is the usual choice.
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer at '{path}' has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory (or a hub id with network),
    or from a .gguf file, converted once into uldkit's cache (models/gguf.py).

    A local directory is scanned first: pickle weights and remote code are refused unless
    the matching opt-in is given.
    """
    from uldkit.models.config_check import check_model_config
    from uldkit.models.gguf import converted_gguf_dir, is_gguf_path
    from uldkit.models.scan import check_model_dir

    if is_gguf_path(path):
        path = converted_gguf_dir(path)
    check_model_name(path)
    placement = resolve_placement(device, dtype)
    local = Path(path)
    if local.exists():
        check_model_dir(local, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        if not (local / "config.json").exists():
            raise ModelError(f"'{local}' is not a model directory (no config.json)")
        # Before transformers reads it (the tokenizer reads it too) or allocates anything.
        check_model_config(local, placement.dtype.itemsize)
    elif str(path).startswith((".", "/", "~")) or os.sep + os.sep in str(path):
        raise ModelError(f"model path '{path}' does not exist")
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=placement.dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
        )
    except SafetensorError as err:
        raise ModelError(f"cannot load a model from '{path}': a safetensors weights file is "
                         f"damaged or truncated ({_first_line(err)})") from None
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a model from '{path}': {_first_line(err)}") from None
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ModelError(
            f"tokenizer at '{path}' has {len(tokenizer)} tokens but the model's embedding has "
            f"{model.get_input_embeddings().num_embeddings}"
        )
    model.to(placement.device)
    model.eval()
    return model, tokenizer


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | os.PathLike,
) -> Path:
    """Save weights (safetensors) and tokenizer into `out_dir`, each file replaced atomically.

    Other files in `out_dir` (checkpoints, run records) are left alone.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    hf_logging.disable_progress_bar()
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    staging.rmdir()
    return out


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
