"""Answers stop: at every eos id of the generation config, at the chat template's end of
turn, and (plain QA format) where the answer runs on into a next "Question:"."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from uldkit.data.formatting import IGNORE_INDEX, encode_qa, end_of_turn_id
from uldkit.models.generation import GenerationSettings, generate_answers, generate_ids
from uldkit.models.lm import CausalLM
from uldkit.models.stops import model_stop_ids
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer

RUN_ON = ("Question: Who wrote the river book?\nAnswer: Ada Lovelace wrote it."
          "\nQuestion: Where is the mill?\nAnswer: North of the town.")
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tokenizer():
    tokenizer = train_bpe_tokenizer([RUN_ON] * 10, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>",
                                                                "<|end|>"]})
    return tokenizer


@pytest.fixture(scope="module")
def memorised():
    """A very small Llama trained in-process until it repeats RUN_ON greedily."""
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    ids = torch.tensor([tokenizer(RUN_ON)["input_ids"]])
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(60):
        loss = model(input_ids=ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model, tokenizer


def test_plain_answer_is_cut_where_it_runs_on_into_the_next_question(memorised):
    model, tokenizer = memorised
    lm = CausalLM(model, tokenizer)
    question = ["Who wrote the river book?"]
    running_on = generate_answers(lm, question, GenerationSettings(max_new_tokens=30,
                                                                   stop_texts=()))
    assert "\nQuestion:" in running_on[0]  # what the model does left alone
    assert generate_answers(lm, question, GenerationSettings(max_new_tokens=30)) == [
        "Ada Lovelace wrote it."]
    ids = generate_ids(lm, [tokenizer("Question: Who wrote the river book?\nAnswer:")[
        "input_ids"]], GenerationSettings(max_new_tokens=30))[0]
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "Ada Lovelace wrote it."


def test_known_greedy_tokens_are_cut_at_stop_text_like_decoded_ones(memorised):
    model, tokenizer = memorised
    lm = CausalLM(model, tokenizer)
    prompt = [tokenizer("Question: Who wrote the river book?\nAnswer:")["input_ids"]]
    raw = generate_ids(lm, prompt, GenerationSettings(max_new_tokens=30, stop_texts=()))[0]
    settings = GenerationSettings(max_new_tokens=30)
    cut = generate_ids(lm, prompt, settings)[0]
    assert len(cut) < len(raw)
    assert generate_ids(lm, prompt, settings, [raw])[0] == cut
    assert generate_ids(lm, prompt, settings, [raw[:len(cut)]])[0] == cut


def test_generation_stops_at_the_second_eos_id_of_the_generation_config(memorised):
    model, tokenizer = memorised
    lm = CausalLM(model, tokenizer)
    prompt = [tokenizer("Question: Where is the mill?\nAnswer:")["input_ids"]]
    settings = GenerationSettings(max_new_tokens=12, stop_texts=())
    free = generate_ids(lm, prompt, settings)[0]
    cut = next(i for i, t in enumerate(free) if i >= 2 and t not in free[:i]
               and t != tokenizer.eos_token_id)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, free[cut]]
    try:
        assert generate_ids(lm, prompt, settings)[0] == free[:cut]
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id


def test_chat_template_end_of_turn_stops_generation_and_ends_training_answers():
    tokenizer = _tokenizer()
    tokenizer.chat_template = TEMPLATE
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_of_turn_id(tokenizer) == end
    encoded = encode_qa(tokenizer, "Who wrote it?", "Ada Lovelace")
    assert encoded.input_ids[-1] == end and encoded.labels[-1] == end
    assert encoded.labels[0] == IGNORE_INDEX
    lm = CausalLM(build_tiny_llama(tokenizer), tokenizer)
    assert end in model_stop_ids(lm) and tokenizer.eos_token_id in model_stop_ids(lm)
    tokenizer.chat_template = None
    assert end_of_turn_id(tokenizer) is None
    assert encode_qa(tokenizer, "Who wrote it?", "Ada").input_ids[-1] == tokenizer.eos_token_id
