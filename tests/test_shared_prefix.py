"""Shared-prefix scoring: each question's prompt runs once and its answers are scored from the
cached keys and values; the losses equal whole-sequence scoring to float32 round-off, for a
plain model, a ULD model (paired pass, and two passes) and a combination of models."""

from __future__ import annotations

import numpy as np
import pytest
from random_assistant import random_assistant

from uldkit.data.synthetic import generate_world
from uldkit.eval.memorisation import qa_memorisation
from uldkit.eval.tofu_eval import score_tofu_set
from uldkit.models.lm import CausalLM
from uldkit.models.scoring import answer_scores
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    return generate_world(6, seed=2)


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_bpe_tokenizer(world.texts(), vocab_size=400)


@pytest.fixture(scope="module")
def pairs(world):
    return world.split("forget10").pairs + world.split("retain_perturbed").pairs[:4]


def _uld(tokenizer, tau: float) -> LogitDifferenceModel:
    assistant = random_assistant(build_tiny_llama(tokenizer, "tiny", seed=4).eval())
    return LogitDifferenceModel(assistant, tokenizer, alpha=0.8, tau=tau)


def _models(tokenizer) -> dict[str, object]:
    plain = CausalLM(build_tiny_llama(tokenizer, "tiny", seed=3).eval(), tokenizer)
    other = CausalLM(build_tiny_llama(tokenizer, "tiny", seed=5).eval(), tokenizer)
    uld = _uld(tokenizer, tau=0.0)
    return {
        "plain": plain,
        "uld paired": uld,
        "uld paired, filtered": _uld(tokenizer, tau=1e-3),
        "uld two passes": LogitCombination(uld.members, uld.combine, tokenizer, uld.device),
        "offset-style sum": LogitCombination(
            [plain, other], lambda scores: scores[0] + 0.5 * scores[1], tokenizer,
            plain.device),
    }


def _all_answers(pairs):
    questions, answers = [], []
    for pair in pairs:
        for answer in (pair.answer, pair.paraphrased_answer, *pair.perturbed_answers):
            questions.append(pair.question)
            answers.append(answer)
    return questions, answers


@pytest.mark.parametrize("name", ["plain", "uld paired", "uld paired, filtered",
                                  "uld two passes", "offset-style sum"])
@pytest.mark.parametrize("batch_size", [1, 7, 40])
def test_shared_prefix_losses_equal_whole_sequence_losses(tokenizer, pairs, name, batch_size):
    lm = _models(tokenizer)[name]
    questions, answers = _all_answers(pairs)
    plain = answer_scores(lm, questions, answers, batch_size=8, greedy_matches=True,
                          shared_prefix=False)
    shared = answer_scores(lm, questions, answers, batch_size=batch_size,
                           greedy_matches=True)
    assert (shared.counts == plain.counts).all()
    np.testing.assert_allclose(shared.sums / shared.counts, plain.sums / plain.counts,
                               rtol=0, atol=2e-5)
    assert plain.sums.max() > 1  # real losses, not a degenerate case
    for ours, theirs in zip(shared.greedy_matches, plain.greedy_matches):
        assert (ours == theirs).all()


def test_one_prompt_pass_per_question(tokenizer, pairs):
    """The prompt is run once per question: count the tokens the model is given."""
    lm = _models(tokenizer)["plain"]
    seen = []
    model = lm.model
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"].numel()), with_kwargs=True)
    questions, answers = _all_answers(pairs)
    try:
        answer_scores(lm, questions, answers, batch_size=64)
        shared = sum(seen)
        seen.clear()
        answer_scores(lm, questions, answers, batch_size=64, shared_prefix=False)
        whole = sum(seen)
    finally:
        hook.remove()
    assert shared < 0.8 * whole


def test_tofu_set_and_memorisation_agree_with_whole_sequences(tokenizer, world):
    lm = _models(tokenizer)["uld paired"]
    data = world.split("forget10").pairs
    from uldkit.models import scoring

    shared = score_tofu_set(lm, data, batch_size=4, max_new_tokens=3, memorisation=True)
    original = scoring.answer_scores
    try:
        scoring.answer_scores = lambda *a, **k: original(*a, **{**k, "shared_prefix": False})
        import uldkit.eval.tofu_eval as tofu_eval

        tofu_eval.answer_scores = scoring.answer_scores
        whole = score_tofu_set(lm, data, batch_size=4, max_new_tokens=3, memorisation=True)
    finally:
        scoring.answer_scores = original
        tofu_eval.answer_scores = original
    for field in ("avg_gt_loss", "avg_paraphrased_loss"):
        np.testing.assert_allclose([shared[field][k] for k in shared[field]],
                                   [whole[field][k] for k in shared[field]], atol=2e-5)
    assert shared["extraction_strength"] == whole["extraction_strength"]
    assert shared["generated_text"] == whole["generated_text"]
    direct = qa_memorisation(lm, data, batch_size=3)
    np.testing.assert_allclose([shared["extraction_strength"][str(i)] for i in range(len(data))],
                               direct.extraction_strength)
