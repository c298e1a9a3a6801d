"""Greedy decoding that starts from tokens already known to be the model's greedy choices
(as a TOFU loss pass shows them): the same output as decoding from the prompt, with fewer
decoding steps, for a plain and a ULD model and a trained model that reproduces its
answers."""

from __future__ import annotations

import pytest
import torch
from random_assistant import random_assistant

from uldkit.data.formatting import encode_prompt
from uldkit.errors import ConfigError
from uldkit.eval.tofu_eval import score_tofu_set
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import CausalLM
from uldkit.models.scoring import answer_scores
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.unlearning.load import load_language_model

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["Question: Who wrote the river book?\nAnswer: Ada wrote it in the north.",
         "Question: Where is the old mill?\nAnswer: North of the town, by the river."]


class Counted:
    """A `LanguageModel` that counts its decoding steps (prefills and single steps)."""

    def __init__(self, lm) -> None:
        self.lm, self.tokenizer, self.steps = lm, lm.tokenizer, 0

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def logits(self, input_ids, attention_mask):
        return self.lm.logits(input_ids, attention_mask)

    def start_decoding(self, input_ids, attention_mask):
        self.steps += 1
        decoding, outer = self.lm.start_decoding(input_ids, attention_mask), self

        class Steps:
            @property
            def scores(self):
                return decoding.scores

            def advance(self, next_tokens):
                outer.steps += 1
                decoding.advance(next_tokens)

        return Steps()


def _models():
    tokenizer = train_bpe_tokenizer(TEXTS * 5, vocab_size=300)
    plain = CausalLM(build_tiny_llama(tokenizer, "tiny", seed=3).eval(), tokenizer)
    assistant = random_assistant(build_tiny_llama(tokenizer, "tiny", seed=4).eval())
    uld = LogitDifferenceModel(assistant, tokenizer, alpha=0.8, tau=0.0)
    return {"plain": plain, "uld": uld}


@pytest.mark.parametrize("name", ["plain", "uld"])
def test_known_tokens_give_the_same_answers_with_fewer_steps(name):
    lm = Counted(_models()[name])
    prompts = [lm.tokenizer(text.split("Answer:")[0] + "Answer:")["input_ids"]
               for text in TEXTS]
    settings = GenerationSettings(max_new_tokens=6, stop_texts=())
    free = generate_ids(lm, prompts, settings)
    assert all(len(ids) == 6 for ids in free)  # an untrained model runs to the cap
    steps = lm.steps
    for known in (0, 1, 4):
        lm.steps = 0
        assert generate_ids(lm, prompts, settings, [ids[:known] for ids in free]) == free
        assert lm.steps == steps - known
    lm.steps = 0
    assert generate_ids(lm, prompts, settings, [ids + [5, 6] for ids in free]) == free
    assert lm.steps == 0  # every row ends within what is known
    mixed = generate_ids(lm, prompts, settings, [free[0], []])
    assert mixed == free and lm.steps == steps
    with pytest.raises(ConfigError, match="greedy"):
        generate_ids(lm, prompts, GenerationSettings(do_sample=True, temperature=1.0),
                     [[], []])


def test_loss_pass_shows_a_trained_models_greedy_answers(trained_world):
    """The fixture target reproduces its training answers: the loss pass's argmax gives
    most of each answer and its end, so generation needs few steps, and the texts are
    those of decoding from the prompt."""
    lm = Counted(load_language_model(trained_world.target, device="cpu"))
    pairs = trained_world.source.load("forget10").pairs[:8]
    questions = [pair.question for pair in pairs]
    scored = answer_scores(lm, questions, [pair.answer for pair in pairs], greedy_matches=True)
    free = generate_ids(lm, [encode_prompt(lm.tokenizer, q) for q in questions],
                        GenerationSettings(max_new_tokens=40))
    for index, ids in enumerate(free):
        known = scored.greedy_continuation(index)
        assert (ids + [lm.tokenizer.eos_token_id])[:len(known)] == known
    assert sum(all(m) for m in scored.greedy_matches) >= 4  # answers reproduced to the end

    lm.steps = 0
    shared = score_tofu_set(lm, pairs, batch_size=4, max_new_tokens=40)
    resumed_steps, lm.steps = lm.steps, 0
    whole = score_tofu_set(lm, pairs, batch_size=4, max_new_tokens=40, shared_prefix=False)
    assert shared["generated_text"] == whole["generated_text"]
    assert shared["rougeL_recall"] == whole["rougeL_recall"]
    assert resumed_steps < lm.steps / 2
