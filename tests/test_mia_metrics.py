"""Membership-inference, MUSE and memorisation metrics against values computed by hand."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest
import torch

from uldkit.data.synthetic import generate_world
from uldkit.errors import ConfigError, DataError
from uldkit.eval.knowmem import muse_rouge_l_f1
from uldkit.eval.memorisation import (
    distinct_n,
    exact_memorisation_from_matches,
    extraction_strength_from_matches,
    fluency,
    mean_token_entropy,
    memorisation,
    ngram_entropy,
    repetition_rate,
)
from uldkit.eval.mia import (
    MIA_STAGES,
    MiaReport,
    attack_scores,
    lowest_fraction_mean,
    mia_audit,
    min_k_plus_plus_score,
    min_k_score,
    roc_auc,
    verdict,
    zlib_length,
    zlib_score,
)
from uldkit.eval.muse import privleak, verbmem, verbmem_pairs
from uldkit.eval.rouge import rouge_l
from uldkit.eval.token_scores import score_continuations, score_passages
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import CausalLM
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.training.journal import JournalledStages

LN2 = math.log(2)


class _Tokenizer:
    """Only what scoring and generation read from a tokenizer."""

    pad_token_id = 0
    eos_token_id = None


class BigramLM:
    """A LanguageModel whose next-token scores depend only on the current token:
    scores[b, t] = table[input_ids[b, t]]. Every number it gives is known in advance."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.tokenizer = _Tokenizer()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def logits(self, input_ids, attention_mask):
        return self.table[input_ids]

    def start_decoding(self, input_ids, attention_mask):
        lm = self

        class _Decoding:
            scores = lm.table[input_ids[:, -1]]

            def advance(self, next_tokens):
                self.scores = lm.table[next_tokens]

        return _Decoding()


def _probs_table(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


# --- AUC --------------------------------------------------------------------------------------
def test_auc_on_small_lists_with_ties():
    assert roc_auc([3, 2, 1], [0, -1]) == 1.0
    assert roc_auc([0, -1], [3, 2, 1]) == 0.0
    # members 1, 1 vs non-members 1, 0: pairs (tie, win, tie, win) -> 3/4
    assert roc_auc([1, 1], [1, 0]) == 0.75
    # 0.9 beats all three; 0.4 ties two 0.4s (1/2 each) and beats 0.1 -> (3 + 2) / 6
    assert roc_auc([0.9, 0.4], [0.4, 0.1, 0.4]) == pytest.approx(5 / 6)
    assert roc_auc([5, 5, 5], [5, 5]) == 0.5


def test_auc_matches_counting_every_pair():
    rng = np.random.default_rng(0)
    members, others = rng.integers(0, 6, 17), rng.integers(0, 6, 11)  # many ties
    counted = sum(1.0 if m > o else 0.5 if m == o else 0.0
                  for m, o in itertools.product(members, others))
    assert roc_auc(members, others) == pytest.approx(counted / (17 * 11))


def test_auc_rejects_empty_and_nan():
    with pytest.raises(DataError):
        roc_auc([], [1.0])
    with pytest.raises(DataError):
        roc_auc([float("nan")], [1.0])


# --- per-sample attack scores --------------------------------------------------------------------
def test_min_k_takes_the_floor_of_k_n_lowest_log_probs():
    logprobs = np.array([-0.1, -2.0, -0.5, -3.0, -1.0])
    assert min_k_score(logprobs, 0.4) == pytest.approx(-2.5)  # 2 lowest: -3, -2
    assert min_k_score(logprobs, 0.2) == pytest.approx(-3.0)  # 1 lowest
    assert min_k_score(logprobs, 0.1) == pytest.approx(-3.0)  # floor(0.5) = 0 -> at least 1
    assert min_k_score(logprobs, 1.0) == pytest.approx(-6.6 / 5)
    with pytest.raises(ValueError):
        lowest_fraction_mean(logprobs, 0.0)


def test_min_k_plus_plus_on_a_three_token_vocabulary_by_hand():
    # After token 0 the distribution is (1/2, 1/4, 1/4): mu = -(3/2) ln 2, sigma = (ln 2) / 2,
    # so token 0 standardises to (-ln 2 + 1.5 ln 2) / (0.5 ln 2) = +1 and tokens 1, 2 to -1.
    # After token 1 it is (1/4, 1/2, 1/4): token 1 -> +1, tokens 0 and 2 -> -1.
    # After token 2 it is (0.7, 0.2, 0.1): computed below from the definitions.
    p2 = [0.7, 0.2, 0.1]
    lm = BigramLM(_probs_table([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], p2]))
    [scores] = score_continuations(lm, [[0]], [[0, 1, 1, 2, 0]])
    mu2 = sum(p * math.log(p) for p in p2)
    sigma2 = math.sqrt(sum(p * math.log(p) ** 2 for p in p2) - mu2 ** 2)
    expected_logprobs = [-LN2, -2 * LN2, -LN2, -2 * LN2, math.log(0.7)]
    expected_std = [1, -1, 1, -1, (math.log(0.7) - mu2) / sigma2]
    np.testing.assert_allclose(scores.logprobs, expected_logprobs, rtol=1e-6)
    np.testing.assert_allclose(scores.vocab_mean, [-1.5 * LN2] * 4 + [mu2], rtol=1e-6)
    np.testing.assert_allclose(scores.vocab_std, [LN2 / 2] * 4 + [sigma2], rtol=1e-6)
    standardised = sorted(expected_std)
    for k, count in ((0.2, 1), (0.4, 2), (0.6, 3), (1.0, 5)):
        assert min_k_plus_plus_score(scores.logprobs, scores.vocab_mean, scores.vocab_std, k) \
            == pytest.approx(np.mean(standardised[:count]), rel=1e-6)
    # the loss attack is -L(x), the mean token log-prob
    row = attack_scores(scores, "text", k=0.4, reference_loss=2.0)
    assert row["loss"] == pytest.approx(np.mean(expected_logprobs), rel=1e-6)
    assert row["reference"] == pytest.approx(2.0 + np.mean(expected_logprobs), rel=1e-6)


def test_excluded_tokens_do_not_break_vocabulary_statistics():
    table = torch.tensor([[0.0, 0.0, -math.inf], [0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]])
    [scores] = score_continuations(BigramLM(table), [[0]], [[1, 0]])
    np.testing.assert_allclose(scores.vocab_mean, [-LN2, -LN2], rtol=1e-6)
    np.testing.assert_allclose(scores.vocab_std, [0.0, 0.0], atol=1e-6)
    assert np.isfinite(scores.logprobs).all()


def test_zlib_ratio():
    assert zlib_length("") == 8  # header (2) + empty deflate block (2) + Adler-32 (4)
    repetitive, varied = "ab" * 200, "".join(chr(33 + (i * 7919) % 90) for i in range(400))
    assert zlib_length(repetitive) < 20 < zlib_length(varied)
    assert zlib_score(3.0, repetitive) == pytest.approx(-3.0 / len(zlib.compress(b"ab" * 200)))
    # the same loss on a text that compresses worse scores as less suspicious of membership
    assert zlib_score(3.0, repetitive) < zlib_score(3.0, varied) < 0


def test_verdict_rule():
    assert verdict(0.9, 0.5).startswith("still separates")
    assert verdict(0.58, 0.5).startswith("does not separate")
    assert verdict(0.3, 0.5).startswith("separates them in reverse")
    assert verdict(0.65).startswith("still separates")  # against chance without a retain AUC


# Hand-built member (forget) / non-member (holdout) scores, 4 a side, and their AUCs.
_AUC_1 = [5, 6, 7, 8], [1, 2, 3, 4]          # every forget score above every holdout one
_AUC_0 = [1, 2, 3, 4], [5, 6, 7, 8]          # every one below
_AUC_HALF = [1, 4, 5, 8], [2, 3, 6, 7]       # 8 of 16 pairs in order
_AUC_10_16 = [2, 4, 6, 8], [1, 3, 5, 7]      # 10 of 16: 0.625
_AUC_9_16 = [1, 4, 6, 8], [2, 3, 5, 7]       # 9 of 16: 0.5625


def _audit(model: dict, retain: dict | None = None) -> MiaReport:
    """`mia_audit` on scores already journalled for the model (and retain model), as a resumed
    audit finds them: nothing is scored, the AUCs, verdicts and conclusion are computed."""
    stages = JournalledStages(MIA_STAGES)
    stages.finished = {0: {"stage": "model", "result": _scores(model)}}
    if retain is not None:
        stages.finished[1] = {"stage": "retain_model", "result": _scores(retain)}
    never_called = object()  # the scores come from the journal
    return mia_audit(never_called, ["f1", "f2", "f3", "f4"], ["h1", "h2", "h3", "h4"],
                     retain_lm=None if retain is None else never_called, stages=stages)


def _scores(attacks: dict) -> dict:
    return {name: [float(x) for x in forget + holdout]
            for name, (forget, holdout) in attacks.items()}


def test_conclusion_names_separating_and_reversed_attacks():
    report = _audit({"loss": _AUC_1, "zlib": _AUC_9_16, "min_k": _AUC_0},
                    {"loss": _AUC_HALF, "zlib": _AUC_HALF, "min_k": _AUC_HALF})
    assert [(r.attack, r.auc, r.retain_auc) for r in report.attacks] == [
        ("loss", 1.0, 0.5), ("zlib", 0.5625, 0.5), ("min_k", 0.0, 0.5)]
    assert report.separating() == ["loss"] and report.reversed() == ["min_k"]
    assert report.conclusion() == (
        "Still separating forget from holdout: loss. In reverse (forget samples less familiar "
        "than unseen ones, a sign of over-unlearning): min_k.")

    # Against the retain model, not chance: loss separates no more than the retain model does,
    # min_k at chance is reversed against a retain model that separates perfectly.
    report = _audit({"loss": _AUC_1, "zlib": _AUC_10_16, "min_k": _AUC_HALF},
                    {"loss": _AUC_1, "zlib": _AUC_HALF, "min_k": _AUC_1})
    assert report.separating() == ["zlib"] and report.reversed() == ["min_k"]
    assert report.conclusion() == (
        "Still separating forget from holdout: zlib. In reverse (forget samples less familiar "
        "than unseen ones, a sign of over-unlearning): min_k.")
    report = _audit({"loss": _AUC_1, "zlib": _AUC_9_16}, {"loss": _AUC_1, "zlib": _AUC_HALF})
    assert report.separating() == [] and report.reversed() == []
    assert report.conclusion() == ("No attack separates forget from holdout samples more "
                                   "than the retain model does.")

    # Without a retain model, the baseline is chance.
    report = _audit({"loss": _AUC_9_16, "min_k": _AUC_0})
    assert report.separating() == [] and report.reversed() == ["min_k"]
    assert report.conclusion() == (
        "No attack separates forget from holdout samples more than chance does. In reverse "
        "(forget samples less familiar than unseen ones, a sign of over-unlearning): min_k.")
    assert _audit({"loss": _AUC_10_16}).conclusion() == (
        "Still separating forget from holdout: loss.")


def test_privleak():
    assert privleak(0.8, 0.5) == pytest.approx(0.6)
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.25, 0.5) == pytest.approx(-0.5)


# --- ROUGE ------------------------------------------------------------------------------------
def test_rouge_l_f1_and_recall_on_a_known_pair():
    # LCS of "the cat sat on the mat" and "the cat is on the mat today" = the cat on the mat
    score = rouge_l("the cat sat on the mat", "the cat is on the mat today")
    assert score.recall == pytest.approx(5 / 7)
    assert score.precision == pytest.approx(5 / 6)
    assert score.f1 == pytest.approx(10 / 13)  # 2PR / (P + R)
    assert rouge_l("", "anything").recall == 0


# --- memorisation -------------------------------------------------------------------------------
# Greedy choices: after 0 comes 1, after 1 comes 2, after 2 comes 0.
_CYCLE = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]])


@pytest.mark.parametrize(("continuation", "em", "es"), [
    ([1, 2, 0, 1], 1.0, 1.0),    # everything follows from the prompt alone
    ([1, 2, 1, 2], 0.75, 0.25),  # last miss at position 3 of 4: the prefix y_1..y_3 is needed
    ([1, 2, 0, 2], 0.75, 0.0),   # the last token is never the greedy one: nothing extractable
    ([2, 0, 1, 2], 0.75, 0.75),  # only the first token must be given
    ([0, 0, 0, 0], 0.0, 0.0),
])
def test_exact_memorisation_and_extraction_strength(continuation, em, es):
    result = memorisation(BigramLM(_CYCLE), [[0]], [continuation], es_definition="uldkit")
    assert result.exact_memorisation[0] == pytest.approx(em)
    assert result.extraction_strength[0] == pytest.approx(es)


# OpenUnlearning's EM and ES, by hand: the last token (an answer's EOS) is dropped, T' = 3,
# and the suffix search stops at k = T' - 1, so a miss at the last kept token gives 1/3, not 0.
@pytest.mark.parametrize(("continuation", "em", "es"), [
    ([1, 2, 0, 1], 1.0, 1.0),      # matches T T T (T): no miss
    ([1, 2, 1, 2], 2 / 3, 1 / 3),  # T T F (T): last miss at 3 of 3, k capped at 2
    ([1, 2, 0, 2], 1.0, 1.0),      # T T T (F): the missed last token is not scored
    ([2, 0, 1, 2], 2 / 3, 2 / 3),  # F T T (T): k = 1
    ([0, 0, 0, 0], 0.0, 1 / 3),    # F F F (F): k capped at 2
    ([1], 0.0, 0.0),               # nothing left once the last token is dropped
])
def test_memorisation_as_openunlearning_defines_it(continuation, em, es):
    result = memorisation(BigramLM(_CYCLE), [[0]], [continuation])  # the default
    assert result.exact_memorisation[0] == pytest.approx(em)
    assert result.extraction_strength[0] == pytest.approx(es)
    assert memorisation(BigramLM(_CYCLE), [[0]], [continuation],
                        es_definition="openunlearning").extraction_strength[0] == \
        pytest.approx(es)
    with pytest.raises(ConfigError, match="extraction strength definition"):
        memorisation(BigramLM(_CYCLE), [[0]], [continuation], es_definition="carlini")


def test_extraction_strength_equals_the_smallest_prefix_that_greedy_decoding_completes():
    lm = BigramLM(_CYCLE)
    for continuation in itertools.product(range(3), repeat=4):
        truth = list(continuation)
        smallest = next(
            (k for k in range(4)
             if generate_ids(lm, [[0] + truth[:k]],
                            GenerationSettings(4 - k, stop_texts=()))[0] == truth[k:]),
            4,
        )
        es = memorisation(lm, [[0]], [truth], es_definition="uldkit").extraction_strength[0]
        assert es == pytest.approx(1 - smallest / 4), truth


def test_match_helpers_on_edge_cases():
    assert exact_memorisation_from_matches(np.array([], dtype=bool)) == 0.0
    assert exact_memorisation_from_matches(np.array([True, False]), "uldkit") == 0.5
    assert exact_memorisation_from_matches(np.array([True, False])) == 1.0  # EOS not scored
    assert extraction_strength_from_matches(np.array([], dtype=bool)) == 0.0
    assert extraction_strength_from_matches(np.array([False, True, True, True]),
                                            "uldkit") == 0.75
    # a 64-token answer + EOS missed last at its 16th token (uldkit's reference log, sample 5)
    matches = np.ones(64, dtype=bool)
    matches[14] = False
    assert extraction_strength_from_matches(matches, "uldkit") == 1 - 15 / 64
    assert extraction_strength_from_matches(matches) == 1 - 15 / 63  # OpenUnlearning's


# --- real tiny model: padding-safety, ES against real generation ----------------------------------
@pytest.fixture(scope="module")
def tiny_lm() -> CausalLM:
    world = generate_world(6, seed=1)
    tokenizer = train_bpe_tokenizer(world.texts(), vocab_size=400)
    model = build_tiny_llama(tokenizer, "tiny", seed=3).eval()
    return CausalLM(model, tokenizer)


def test_scores_do_not_depend_on_batching_or_padding(tiny_lm):
    texts = [d.text for d in generate_world(6, seed=1).biographies()] + ["A short one."]
    alone = score_passages(tiny_lm, texts, batch_size=1)
    together = score_passages(tiny_lm, texts, batch_size=7)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.vocab_std, b.vocab_std, atol=1e-5)
        assert (a.greedy_match == b.greedy_match).all()


def test_extraction_strength_on_a_real_model_matches_its_greedy_decoding(tiny_lm):
    """Take the model's own greedy continuation, force one other token at position j and
    let greedy decoding go on: greedy misses exactly there, so ES = 1 - (j + 1) / 6."""
    tokenizer = tiny_lm.tokenizer

    def greedy(prompt: list[int], n: int) -> list[int]:
        return generate_ids(tiny_lm, [prompt], GenerationSettings(n))[0] if n else []

    prefixes, truths, expected = [], [], []
    for text in ("Where was", "The capital of", "Kalo is"):
        prompt = tokenizer(text)["input_ids"]
        own = greedy(prompt, 6)
        for miss in (None, 0, 3, 5):
            truth = list(own)
            if miss is not None:
                truth[miss] = 3 + (truth[miss] + 1 - 3) % (len(tokenizer) - 3)  # not special
                truth[miss + 1:] = greedy(prompt + truth[:miss + 1], 5 - miss)
            if len(truth) == 6:  # greedy decoding did not stop at EOS
                prefixes.append(prompt)
                truths.append(truth)
                expected.append(1.0 if miss is None else 1 - (miss + 1) / 6)
    assert len(truths) >= 8
    result = memorisation(tiny_lm, prefixes, truths, batch_size=5, es_definition="uldkit")
    np.testing.assert_allclose(result.extraction_strength, expected)
    entropy = mean_token_entropy(tiny_lm, prefixes, truths)
    assert ((entropy > 0) & (entropy <= math.log(len(tokenizer)) + 1e-6)).all()


def test_verbmem_prompt_is_halved_for_short_passages(tiny_lm):
    tokenizer = tiny_lm.tokenizer
    bos = [tokenizer.bos_token_id]
    long_text = " ".join(d.text for d in generate_world(6, seed=1).biographies())
    short_text = "Tresk is a city."
    [(prompt, truth), (short_prompt, short_truth)] = verbmem_pairs(
        tokenizer, [long_text, short_text], prompt_tokens=32, max_continuation_tokens=20)
    long_ids = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    short_ids = tokenizer(short_text, add_special_tokens=False)["input_ids"]
    assert prompt == bos + long_ids[:32] and truth == long_ids[32:52]
    half = len(short_ids) // 2
    assert short_prompt == bos + short_ids[:half] and short_truth == short_ids[half:]


def test_verbmem_scores_rouge_l_f1_without_stemming_as_muse(tiny_lm):
    texts = [d.text for d in generate_world(6, seed=1).biographies()][:3]
    mean, records = verbmem(tiny_lm, texts)
    assert [r["rougeL_f1"] for r in records] == [
        muse_rouge_l_f1(r["generated"], r["continuation"]) for r in records]
    assert mean == pytest.approx(np.mean([r["rougeL_f1"] for r in records]))
    # MUSE's scorer keeps word forms: "cats" is not "cat"
    assert muse_rouge_l_f1("cats sat", "cat sat") == pytest.approx(0.5)


# --- fluency ------------------------------------------------------------------------------------
def test_fluency_scores_by_hand():
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert repetition_rate("a b c a b c", 3) == pytest.approx(1 / 4)  # abc, bca, cab, abc
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # ab x2, ba x1
    h3 = 1.0  # aba, bab
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    gibberish = fluency(["the the the the the the the the"])
    readable = fluency(["Tresk is the capital of Alumbria, on the river Veln."])
    assert gibberish.repetition_3 == 1 - 1 / 6 and readable.repetition_3 == 0.0
    assert gibberish.ngram_entropy == 0.0 < readable.ngram_entropy
    assert gibberish.distinct_2 < readable.distinct_2 == 1.0
