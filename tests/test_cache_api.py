"""Generation hands the KV cache over under the name the installed transformers expects, so
neither a plain model nor ULD prints a deprecation warning (and cached decoding still equals
a full forward pass)."""

from __future__ import annotations

import warnings

import pytest
import torch
from random_assistant import random_assistant
from transformers.utils import logging as hf_logging

from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import CausalLM
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel

TEXTS = [f"Person {n} was born in town {n % 7} and works as a baker." for n in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture
def model_and_tokenizer(tokenizer):
    return build_tiny_llama(tokenizer).eval(), tokenizer  # a fresh one: ULD adds adapters


def _uld(model, tokenizer) -> LogitDifferenceModel:
    return LogitDifferenceModel(random_assistant(model), tokenizer, alpha=0.8, tau=0.01)


def test_generation_prints_no_cache_deprecation(model_and_tokenizer, capfd) -> None:
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer("Person 3 was")["input_ids"], tokenizer("born in")["input_ids"]]
    hf_logging.get_logger("transformers").warning_once.cache_clear()  # logged once per process
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing`")  # PEFT's
        uld = _uld(model, tokenizer)
        separate = LogitCombination(uld.members, uld.combine, tokenizer, uld.device)
        for lm in (CausalLM(model, tokenizer), uld, separate):
            generate_ids(lm, prompts, GenerationSettings(max_new_tokens=3))
    assert [str(w.message) for w in caught] == []
    assert "deprecated" not in capfd.readouterr().err


def test_uld_cached_decoding_equals_the_full_pass(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    lm = _uld(model, tokenizer)
    ids = torch.tensor([tokenizer("Person 5 works as")["input_ids"]])
    mask = torch.ones_like(ids)
    continuation = torch.tensor([[7, 9, 11]])
    with torch.no_grad():
        full = lm.logits(torch.cat([ids, continuation], 1), torch.ones(1, ids.shape[1] + 3,
                                                                        dtype=torch.long))
        decoding = lm.start_decoding(ids, mask)
        for step in range(4):
            expected = full[:, ids.shape[1] - 1 + step]
            kept = torch.isfinite(expected)
            assert torch.equal(torch.isfinite(decoding.scores), kept)
            assert (decoding.scores[kept] - expected[kept]).abs().max() < 1e-4
            if step < 3:
                decoding.advance(continuation[:, step])
