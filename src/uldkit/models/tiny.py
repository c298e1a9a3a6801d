"""Tiny Llama-architecture models built from a config, for tests, the demo and benchmarks."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from uldkit.errors import ConfigError

# hidden, layers, heads, intermediate: small enough to memorise the synthetic world on 2 CPU cores.
TINY_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=176),
    "small": dict(
        hidden_size=128, num_hidden_layers=8, num_attention_heads=4, intermediate_size=352
    ),
    "base": dict(
        hidden_size=256, num_hidden_layers=8, num_attention_heads=8, intermediate_size=688
    ),
    # For benchmarks: LoRA's share of a layer (and fixed per-step costs) shrink with width.
    "medium": dict(
        hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1376
    ),
}


def check_size(size: str) -> None:
    """ConfigError unless `size` names one of TINY_SIZES."""
    if size not in TINY_SIZES:
        raise ConfigError(f"unknown model size '{size}'; choose one of {', '.join(TINY_SIZES)}")


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerBase, size: str = "tiny", max_positions: int = 256
) -> LlamaConfig:
    check_size(size)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        num_key_value_heads=TINY_SIZES[size]["num_attention_heads"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        **TINY_SIZES[size],
    )


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerBase, size: str = "tiny", seed: int = 0
) -> LlamaForCausalLM:
    """A freshly initialised Llama model whose vocabulary matches `tokenizer`."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, size))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
