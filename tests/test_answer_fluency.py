"""Fluency of generated forget answers: the repeat measure, and perplexity under a trained
tiny model, on made-up and on really generated (degenerate ULD) answers."""

from __future__ import annotations

import pytest

from uldkit.data.sources import DataSource
from uldkit.eval.answer_perplexity import (
    answers_perplexity,
    fluency_reference_path,
    perplexity_figures,
)
from uldkit.eval.memorisation import fluency, longest_repeat_run
from uldkit.eval.tofu_eval import answer_fluency, score_tofu_set
from uldkit.eval.tofu_log import FORGET_SET
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, unlearn

pytestmark = pytest.mark.usefixtures("one_thread")
ANSWER_CAP = 24  # the test world's greedy answers have at most 15 tokens


@pytest.mark.parametrize(("text", "run"), [
    ("Morbel the Calda,ch,ch,ch Island books.", 6),  # ", ch" three times
    ("The author was born in Paris in 1950.", 0),
    ("he said that he said so", 0),  # repeated, but not back to back
    ("a a a a", 4),
    ("the cat the cat sat", 4),
    ("one two three four one two three four", 8),
    ("a b c d e a b c d e", 0),  # a unit of 5 words is longer than counted
    ("", 0),
])
def test_longest_repeat_run(text, run):
    assert longest_repeat_run(text) == run


@pytest.fixture(scope="module")
def forget(trained_world):
    return list(trained_world.source.load("forget10"))


@pytest.fixture(scope="module")
def retain(trained_world):
    return load_language_model(trained_world.retain, device="cpu")


def _degenerate(answer: str) -> str:
    """The answer with its middle replaced by a stutter, as ULD's degenerate answers read."""
    words = answer.rstrip(".").split()
    return f"{' '.join(words[:2])}{',ch' * 3} {' '.join(words[-2:])}."


def test_a_degenerate_answer_scores_worse_than_a_fluent_one(retain, forget):
    questions = [p.question for p in forget]
    fluent = [p.answer for p in forget]
    degenerate = [_degenerate(a) for a in fluent]
    assert degenerate[0].count(",ch") == 3
    fluent_ppl = answers_perplexity(retain, questions, fluent)
    degenerate_ppl = answers_perplexity(retain, questions, degenerate)
    assert degenerate_ppl > 2 * fluent_ppl > 2
    # one pair at a time too: each stutter costs its answer
    for question, good, bad in list(zip(questions, fluent, degenerate))[:5]:
        assert answers_perplexity(retain, [question], [bad]) > \
            answers_perplexity(retain, [question], [good])
    assert fluency(degenerate).longest_repeat_run >= 5 > fluency(fluent).longest_repeat_run
    # empty answers are counted, not scored
    figures = perplexity_figures(retain, questions, ["", *fluent[1:]], fluent)
    assert figures["empty_answers"] == 1
    assert figures["perplexity"] == pytest.approx(
        answers_perplexity(retain, questions[1:], fluent[1:]))
    assert answers_perplexity(retain, questions[:2], ["", " "]) is None


@pytest.fixture(scope="module")
def uld_dir(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("fluency") / "uld"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(out),
                          people=trained_world.people, forget="forget10",
                          hyperparameters={"assistant_layers": 2, "uniform_weight": 1.0,
                                           "alpha": 1.0},
                          train_overrides={"epochs": 5, "lr": 1e-2}), show_progress=False)
    return out


def _forget_log(lm, pairs):
    return score_tofu_set(lm, pairs, max_new_tokens=ANSWER_CAP)


def test_degenerate_uld_answers_show_in_the_figures(trained_world, retain, forget, uld_dir):
    """ULD with a large alpha answers with broken, repeating text; its perplexity under the
    retain model and its repeat runs must say so, against the same ULD model at alpha 0
    (the target itself)."""
    assert fluency_reference_path(uld_dir) == str(trained_world.target)
    retain_log = {FORGET_SET: _forget_log(retain, forget)}
    dataset = DataSource("synthetic", people=trained_world.people).load("forget10")
    figures = {}
    for alpha in (0.0, 3.0):
        lm = load_language_model(uld_dir, alpha=alpha, tau=0.0, device="cpu")
        figures[alpha] = answer_fluency(retain, dataset, _forget_log(lm, forget), retain_log)
    fluent, broken = figures[0.0], figures[3.0]
    # same reference, same retain answers: the retain model's own answers' perplexity agrees
    assert fluent["retain_answers_perplexity"] == pytest.approx(
        broken["retain_answers_perplexity"])
    assert broken["perplexity_ratio"] > 10 * fluent["perplexity_ratio"] > 10
    assert broken["longest_repeat_run"] > fluent["longest_repeat_run"]
    assert broken["max_repeat_run"] >= 6 and fluent["max_repeat_run"] == 0
    assert broken["ngram_entropy"] < fluent["ngram_entropy"]
