"""KnowMem as MUSE's authors compute it, against numbers worked out by hand from their
definitions, and against their loop (one question at a time through Hugging Face's
`generate`) on a real tiny model; and uldkit's variant kept by name."""

from __future__ import annotations

import pytest
import torch

from uldkit.data.synthetic import generate_world
from uldkit.data.types import QAPair
from uldkit.errors import ConfigError
from uldkit.eval.knowmem import (
    cut_at_stop_words,
    knowmem,
    muse_prompt,
    muse_rouge_l_f1,
)
from uldkit.models.lm import CausalLM
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer

EXAMPLES = (QAPair("Who wrote Hamlet?", "William Shakespeare"),
            QAPair("What is the capital of Peru?", "Lima"))


def test_prompt_with_in_context_examples():
    assert muse_prompt("Where was Ana born?", EXAMPLES) == (
        "Question: Who wrote Hamlet?\nAnswer: William Shakespeare\n\n"
        "Question: What is the capital of Peru?\nAnswer: Lima\n\n"
        "Question: Where was Ana born?\nAnswer: ")
    assert muse_prompt("Q?") == "Question: Q?\nAnswer: "


@pytest.mark.parametrize(("text", "cut"), [
    ("Lima.\n\nQuestion: next", "Lima."),
    ("Lima\nQuestion: next", "Lima"),
    ("Lima Question: next", "Lima "),
    ("a\nQuestion:b\n\nc", "a"),  # "\n\n" first, then "\nQuestion"
    ("no stop word", "no stop word"),
])
def test_answers_are_cut_at_muses_stop_words(text, cut):
    assert cut_at_stop_words(text) == cut


def test_rouge_l_f1_without_stemming_by_hand():
    # reference "The cat sat" (3 words), answer "the cats sat down" (4): unstemmed, the LCS is
    # "the sat" = 2 words: P = 2/4, R = 2/3, F1 = 2PR / (P + R) = 4/7. Stemmed ("cats" ->
    # "cat") the LCS is 3 words, recall 1: uldkit's variant.
    assert muse_rouge_l_f1("the cats sat down", "The cat sat") == pytest.approx(4 / 7)
    assert muse_rouge_l_f1("", "The cat sat") == 0.0


@pytest.fixture(scope="module")
def tiny():
    world = generate_world(4, seed=3)
    tokenizer = train_bpe_tokenizer(world.texts(), vocab_size=300)
    model = build_tiny_llama(tokenizer, "tiny", seed=7).eval()
    return CausalLM(model, tokenizer), world.split("forget10").pairs[:5]


def _their_loop(lm: CausalLM, pairs, examples, max_new_tokens: int = 32):
    """MUSE's KnowMem loop, step by step as their eval code goes, on Hugging Face's generate:
    (answers, scores)."""
    tokenizer, answers, scores = lm.tokenizer, [], []
    for pair in pairs:
        input_ids = tokenizer(muse_prompt(pair.question, examples), return_tensors="pt",
                              add_special_tokens=True).input_ids
        with torch.no_grad():
            output = lm.model.generate(input_ids, max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True,
                                      clean_up_tokenization_spaces=True)[0]
        answers.append(cut_at_stop_words(text))
        scores.append(muse_rouge_l_f1(answers[-1], pair.answer))
    return answers, scores


def test_knowmem_matches_their_loop_on_a_real_model(tiny):
    lm, pairs = tiny
    mean, records = knowmem(lm, pairs, examples=EXAMPLES, batch_size=3)
    answers, expected = _their_loop(lm, pairs, EXAMPLES)
    assert [r["generated"] for r in records] == answers
    assert any(answers)  # something was generated and kept
    assert [r["rougeL_f1"] for r in records] == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(sum(expected) / len(expected))
    assert all("rougeL_recall" not in r for r in records)


def test_uldkit_variant_is_kept_by_name(tiny):
    lm, pairs = tiny
    _, records = knowmem(lm, pairs, variant="uldkit", answer_tokens=8)
    assert all("rougeL_recall" in r for r in records)
    with pytest.raises(ConfigError, match="KnowMem variant"):
        knowmem(lm, pairs, variant="openunlearning")
