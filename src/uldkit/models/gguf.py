"""GGUF in: turn a llama.cpp / Ollama GGUF file into a safetensors model directory.

Transformers reads the file (`from_pretrained(dir, gguf_file=...)`) and dequantises every
tensor; uldkit then saves the model as float32 safetensors with its tokenizer, and carries
over what the file says about ending a turn: its chat template (into tokenizer_config.json,
by transformers) and its end-of-sequence / end-of-turn ids (into generation_config.json).
`load_model` accepts a .gguf path and converts it once into a cache keyed by the file's
sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from uldkit.errors import ModelError

GGUF_INSTALL_HINT = 'reading GGUF files needs the gguf package: pip install "uldkit[gguf]"'
GGUF_SUFFIX = ".gguf"
SOURCE_RECORD = "gguf_source.json"
# Metadata keys llama.cpp uses for tokens that end a turn or the whole text.
_STOP_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
              "tokenizer.ggml.eom_token_id")


def is_gguf_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(GGUF_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_cache_root() -> Path:
    """Where converted GGUF files live: $ULDKIT_CACHE or ~/.cache/uldkit, then gguf/."""
    base = os.environ.get("ULDKIT_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uldkit"
    return Path(base) / "gguf"


def converted_gguf_dir(path: str | os.PathLike) -> Path:
    """The model directory for GGUF file `path`, converted on first use into the cache."""
    source = _check_file(path)
    target = gguf_cache_root() / file_sha256(source)[:24]
    if not (target / SOURCE_RECORD).exists():
        convert_gguf(source, target)
    return target


def gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The file's scalar metadata plus its tensor types; ModelError if it cannot be read."""
    reader = _reader(_check_file(path))
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if len(field.data) == 1 and key != "tokenizer.ggml.tokens":
            try:
                metadata[key] = field.contents()
            except (ValueError, IndexError, UnicodeDecodeError):
                continue
    metadata["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    return metadata


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantise GGUF file `path` into a float32 safetensors model directory `out_dir`.

    The directory appears whole or not at all (built beside it and renamed into place).
    """
    source = _check_file(path)
    metadata = gguf_metadata(source)
    architecture = metadata.get("general.architecture", "unknown")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"output directory '{out}' exists and is not empty")
    model, tokenizer = _load_with_transformers(source, architecture, metadata)
    _carry_stop_ids(model, tokenizer, metadata)

    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _drop_tokens_past(staging, model.get_input_embeddings().num_embeddings)
    (staging / SOURCE_RECORD).write_text(json.dumps({
        "file": str(source.resolve()), "architecture": architecture,
        "tensor_types": metadata["tensor_types"],
    }, indent=2) + "\n", encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    try:
        staging.rename(out)
    except OSError:  # another process converted the same file first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
        if not (out / SOURCE_RECORD).exists():
            raise
    return out


def _check_file(path: str | os.PathLike) -> Path:
    source = Path(path).expanduser()
    if not source.is_file():
        raise ModelError(f"GGUF file '{path}' does not exist")
    return source


def _reader(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelError(GGUF_INSTALL_HINT) from None
    try:
        return GGUFReader(str(path))
    except Exception as err:  # the reader fails in many ways (struct, numpy, value) on bad bytes
        raise ModelError(f"'{path}' is not a readable GGUF file (truncated or damaged?): "
                         f"{_first_line(err)}") from None


def _load_with_transformers(path: Path, architecture: str, metadata: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = dict(pretrained_model_name_or_path=str(path.parent), gguf_file=path.name)
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(**where)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise ModelError(f"'{path}': GGUF architecture '{architecture}' cannot be converted "
                         f"by transformers ({_first_line(err)})") from None
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"'{path}' holds a '{config.model_type}' encoder-decoder model; "
                         "uldkit needs a decoder-only causal LM")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(**where)
            model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, TypeError) as err:
        raise ModelError(
            f"'{path}' ({architecture}, tensor types {', '.join(metadata['tensor_types'])}) "
            f"cannot be converted: {_first_line(err)}") from None
    except (OSError, RuntimeError) as err:
        raise ModelError(f"'{path}' cannot be read whole (truncated or damaged?): "
                         f"{_first_line(err)}") from None
    # The weights are dequantised already; what remains of the quantiser would refuse to save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _carry_stop_ids(model: Any, tokenizer: Any, metadata: dict[str, Any]) -> None:
    """generation_config.eos_token_id lists every id the file says ends a turn or the text."""
    ids = [int(metadata[key]) for key in _STOP_KEYS if key in metadata]
    if tokenizer.eos_token_id is not None:
        ids.insert(0, tokenizer.eos_token_id)
    ids = [i for i in dict.fromkeys(ids) if 0 <= i < len(tokenizer)]
    if ids:
        model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _drop_tokens_past(model_dir: Path, rows: int) -> None:
    """Remove added tokens the file never had (transformers' byte-level builder adds
    '<|endoftext|>' as a default unknown token), so the tokenizer fits the embedding."""
    tokenizer_file = model_dir / "tokenizer.json"
    config_file = model_dir / "tokenizer_config.json"
    if not tokenizer_file.exists():
        return
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    extra = [t for t in spec.get("added_tokens", []) if t["id"] >= rows]
    if not extra:
        return
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < rows]
    tokenizer_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    if config_file.exists():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        decoder = config.get("added_tokens_decoder", {})
        config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < rows}
        dropped = {t["content"] for t in extra}
        for key, value in list(config.items()):
            if isinstance(value, str) and value in dropped:
                config[key] = None
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
