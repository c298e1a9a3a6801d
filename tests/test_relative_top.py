"""ULD's two relative-top filters on hand-made logits: which tokens each keeps, and the
scores each gives when scoring and when generating."""

from __future__ import annotations

import math

import pytest
import torch

from uldkit.errors import ConfigError
from uldkit.uld.relative_top import (
    EXCLUDED_LOGPROB,
    check_filter,
    filtered_difference,
    plausible_tokens,
)

PROBS = [0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.01, 0.005, 0.004, 0.001]
ASSISTANT = [2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]
ALPHA = 1.0
# tau 0.3: strict keeps p >= 0.15 (tokens 0, 1); reference keeps at least floor(0.3 * 10) = 3
# tokens, so its threshold drops to the third largest p, 0.1 (tokens 0, 1, 2).
TAU = 0.3


def _logits() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([math.log(p) for p in PROBS]).unsqueeze(0),
            torch.tensor(ASSISTANT).unsqueeze(0))


def _log_softmax(values: dict[int, float]) -> dict[int, float]:
    norm = math.log(sum(math.exp(v) for v in values.values()))
    return {i: v - norm for i, v in values.items()}


def _renormalised_over(kept: list[int]) -> list[float]:
    scores = _log_softmax({i: math.log(PROBS[i]) - ALPHA * ASSISTANT[i] for i in kept})
    return [scores.get(i, EXCLUDED_LOGPROB) for i in range(len(PROBS))]


def test_each_filter_keeps_its_tokens():
    logprobs = torch.log_softmax(_logits()[0], -1)
    assert plausible_tokens(logprobs, TAU, "strict")[0].nonzero().flatten().tolist() == [0, 1]
    assert plausible_tokens(logprobs, TAU, "reference")[0].nonzero().flatten().tolist() == [0, 1,
                                                                                             2]
    for name in ("strict", "reference"):
        assert plausible_tokens(logprobs, 0.0, name).all()


def test_the_reference_filter_keeps_a_tenth_of_the_vocabulary_at_the_authors_tau():
    logits = -torch.arange(100.0).unsqueeze(0) * 0.1 - 10.0  # all distinct
    logits[0, 7] = 10.0  # one token holds almost all the probability
    logprobs = torch.log_softmax(logits, -1)
    assert int(plausible_tokens(logprobs, 0.1, "strict").sum()) == 1
    assert int(plausible_tokens(logprobs, 0.1, "reference").sum()) == 10


def test_strict_scores_are_the_same_when_scoring_and_generating():
    target, assistant = _logits()
    expected = torch.tensor(_renormalised_over([0, 1]))
    for generating in (False, True):
        got = filtered_difference(target, assistant, ALPHA, TAU, "strict", generating)[0]
        assert torch.allclose(got, expected, atol=1e-5)


def test_reference_scoring_keeps_the_target_outside_the_filter():
    target, assistant = _logits()
    raw = {i: math.log(p) - (ALPHA * ASSISTANT[i] if i in (0, 1, 2) else 0.0)
           for i, p in enumerate(PROBS)}
    expected = _log_softmax(raw)
    got = filtered_difference(target, assistant, ALPHA, TAU, "reference", generating=False)[0]
    assert torch.allclose(got, torch.tensor([expected[i] for i in range(len(PROBS))]),
                          atol=1e-5)
    assert (got > EXCLUDED_LOGPROB / 2).all()  # nothing excluded: every token has a score
    # outside the filter, scores differ from each other exactly as the target's log-probs do
    assert got[3] - got[9] == pytest.approx(math.log(PROBS[3] / PROBS[9]), abs=1e-5)


def test_reference_generation_excludes_outside_its_wider_filter():
    target, assistant = _logits()
    got = filtered_difference(target, assistant, ALPHA, TAU, "reference", generating=True)[0]
    assert torch.allclose(got, torch.tensor(_renormalised_over([0, 1, 2])), atol=1e-5)


def test_tau_zero_is_no_filter_for_both():
    target, assistant = _logits()
    strict = filtered_difference(target, assistant, ALPHA, 0.0, "strict")
    for generating in (False, True):
        reference = filtered_difference(target, assistant, ALPHA, 0.0, "reference", generating)
        assert torch.equal(strict, reference)
    expected = torch.tensor([math.log(p) - ALPHA * z for p, z in zip(PROBS, ASSISTANT)])
    assert torch.allclose(strict[0], expected, atol=1e-5)


def test_an_unknown_filter_is_a_config_error():
    with pytest.raises(ConfigError, match="strict, reference"):
        check_filter("loose")
