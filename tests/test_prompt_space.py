"""A prompt template that ends in a lone space token: warned about once, and
--strip-prompt-space removes it."""

from __future__ import annotations

import warnings

import pytest

from uldkit.data import formatting
from uldkit.data.formatting import (
    encode_prompt,
    encode_qa,
    ends_in_space_token,
    strip_prompt_space,
)
from uldkit.data.synthetic import generate_world
from uldkit.models.tokenizer import train_bpe_tokenizer

LLAMA2_LIKE = ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST] "
               "{% endfor %}")


@pytest.fixture
def tokenizer(monkeypatch):
    monkeypatch.setattr(formatting, "_WARNED_TEMPLATES", set())
    world = generate_world(4, seed=1)
    tokenizer = train_bpe_tokenizer(world.texts() + ["[INST] [/INST]"], vocab_size=300)
    tokenizer.chat_template = LLAMA2_LIKE
    return tokenizer


def test_space_ending_template_warns_once_and_can_be_stripped(tokenizer):
    with pytest.warns(UserWarning, match=r"chat template .* end in a token of spaces only.*"
                      r"--strip-prompt-space"):
        ids = encode_prompt(tokenizer, "Where was Ana born?")
    assert ends_in_space_token(tokenizer, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning for the same template
        encode_prompt(tokenizer, "Who is Ana?")
        encode_qa(tokenizer, "Who is Ana?", "A writer.")

    strip_prompt_space(tokenizer)
    stripped = encode_prompt(tokenizer, "Where was Ana born?")
    assert stripped == ids[:-1] and not ends_in_space_token(tokenizer, stripped)
    # the answer keeps its own leading space: prompt + " answer" as in training
    encoded = encode_qa(tokenizer, "Where was Ana born?", "In Lima.")
    assert tokenizer.decode(encoded.input_ids, skip_special_tokens=True).endswith(
        "[/INST] In Lima.")


def test_plain_and_newline_templates_do_not_warn(tokenizer):
    tokenizer.chat_template = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompt(tokenizer, "Where was Ana born?")  # "...\nAnswer:"
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
        ids = encode_prompt(tokenizer, "Where was Ana born?")
    assert not ends_in_space_token(tokenizer, ids)
