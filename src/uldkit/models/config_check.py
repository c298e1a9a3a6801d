"""Read a model's config.json before transformers does: refuse what is malformed, or what
would not fit in memory, with one line instead of a traceback or an allocation that never ends.

The size estimate is a lower bound on the parameters of a decoder (embedding, plus per layer
two hidden×hidden attention matrices and two hidden×intermediate MLP matrices per expert),
so a model that fits is never refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from uldkit.errors import ModelError

MAX_CONFIG_BYTES = 10_000_000
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_VOCAB = ("vocab_size", "padded_vocab_size", "n_vocab")
_INTERMEDIATE = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_NESTED = ("text_config", "language_config", "llm_config")


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.json in model directory `path` as a dict; one-line ModelError otherwise."""
    file = Path(path) / "config.json"
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelError(f"{file} is {size:,} bytes; a model config is at most "
                             f"{MAX_CONFIG_BYTES:,}")
        config = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ModelError(f"cannot read {file}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{file} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{file} line {err.lineno} column {err.colno}: not valid JSON "
                         f"({err.msg})") from None
    except (ValueError, RecursionError):
        raise ModelError(f"{file} is not valid JSON (nested too deeply, or numbers too long)") \
            from None
    if not isinstance(config, dict):
        raise ModelError(f"{file} must hold a JSON object, not {type(config).__name__}")
    return config


def estimated_parameters(config: dict[str, Any], where: str = "config.json") -> int:
    """A lower bound on the parameter count a config asks for (0 when it names no sizes)."""
    # A nested text config may repeat the top-level sizes: the largest, not the sum, stays
    # a lower bound.
    total = max((estimated_parameters(config[nested], f"{where} {nested}")
                 for nested in _NESTED if isinstance(config.get(nested), dict)), default=0)
    hidden = _size(config, _HIDDEN, where)
    layers = _size(config, _LAYERS, where)
    vocab = _size(config, _VOCAB, where)
    if hidden is None:
        return total
    intermediate = _size(config, _INTERMEDIATE, where) or 4 * hidden
    experts = _size(config, _EXPERTS, where) or 1
    per_layer = 2 * hidden * hidden + 2 * hidden * intermediate * experts
    return max(total, (vocab or 0) * hidden + (layers or 0) * per_layer)


def check_model_config(path: str | os.PathLike, bytes_per_parameter: int) -> dict[str, Any]:
    """The config, checked: sizes are positive integers and the weights could fit in memory."""
    config = read_model_config(path)
    where = str(Path(path) / "config.json")
    needed = estimated_parameters(config, where) * bytes_per_parameter
    available = available_memory()
    if available is not None and needed > available:
        raise ModelError(
            f"{where} describes a model of at least {needed / 2**30:,.1f} GiB of weights; this "
            f"machine has {available / 2**30:,.1f} GiB of memory available, so it cannot be "
            "loaded (check num_hidden_layers, hidden_size, intermediate_size, vocab_size)"
        )
    return config


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable on Linux), else physical memory, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(config: dict[str, Any], names: tuple[str, ...], where: str) -> int | None:
    for name in names:
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{where}: '{name}' must be a positive whole number, "
                             f"got {json.dumps(value)[:60]}")
        return value
    return None
