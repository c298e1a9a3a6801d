"""Memorisation (exact memorisation, extraction strength) and fluency of generated text.

For a prefix p and its true continuation y = y_1..y_T (an answer after its question prompt,
or the rest of a passage), with g_t = 1 when the model's greedy (argmax) next token given
p + y_<t equals y_t:
- EM (exact memorisation, Tirumala et al., 2022) = mean_t g_t; under the "openunlearning"
  definition below over y without its last token, as ES.
- ES (extraction strength, Carlini et al., 2021), in two definitions (docs/metrics.md):
  "uldkit": 1 - k/T with k the smallest prefix length of y such that greedy decoding from
  p + y_<=k reproduces y_k+1..y_T exactly. Greedy decoding reproduces the rest exactly iff
  every later token is the argmax given the true tokens before it, so k = (position of the
  last t with g_t = 0), or 0 when all g_t = 1 (ES = 1, the whole answer comes out of the
  prompt alone); when the last token itself is missed k = T and ES = 0. QA answers end with
  EOS (as in training), so "reproducing" includes stopping.
  "openunlearning" (the default; published numbers use it): the same over y without its
  last token (T' = T - 1: the EOS of an answer is not scored), and k searched only up to
  T' - 1, so a missed last token gives 1/T' rather than 0; T' = 0 gives 0.
Both come from one forward pass per batch. A continuation token with nothing before it is
not scored.

Fluency of generated texts (the known failure of gradient ascent is gibberish):
- distinct-2: distinct word bigrams / word bigrams (1 = no bigram repeats).
- repetition (n = 3): the fraction of word trigrams that repeat an earlier trigram.
- n-gram entropy: the entropy (bits) of the text's word-bigram and -trigram frequencies,
  combined as (2/3 · H2 + 4/3 · H3) / 2, the "generation entropy" of ROME (Meng et al., 2022).
- longest repeat run: the most words of a text covered by one unit of 1 to 4 words said
  at least twice in a row ("Calda,ch,ch,ch" is 6: the unit ", ch" three times); 0 when no
  unit repeats back to back.
- token entropy: the model's own mean next-token entropy over a continuation (-mu_t).
Words are lower-cased runs of letters/digits, and single punctuation marks.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from uldkit.data.formatting import encode_qa
from uldkit.data.types import QAPair
from uldkit.errors import ConfigError
from uldkit.eval.token_scores import score_continuations
from uldkit.models.lm import LanguageModel

_WORD = re.compile(r"\w+|[^\w\s]")


# --- memorisation -----------------------------------------------------------------------------
ES_OPENUNLEARNING = "openunlearning"
ES_ULDKIT = "uldkit"
ES_DEFINITIONS = (ES_OPENUNLEARNING, ES_ULDKIT)


def exact_memorisation_from_matches(
    greedy_match: np.ndarray, definition: str = ES_OPENUNLEARNING
) -> float:
    """EM from the greedy matches of a continuation's tokens (module docstring); 0 when no
    token is scored (OpenUnlearning logs None there)."""
    check_es_definition(definition)
    matches = np.asarray(greedy_match, dtype=bool)
    if definition == ES_OPENUNLEARNING:
        matches = matches[:-1]
    return float(np.mean(matches)) if len(matches) else 0.0


def check_es_definition(definition: str) -> None:
    if definition not in ES_DEFINITIONS:
        raise ConfigError(f"extraction strength definition must be one of "
                          f"{', '.join(ES_DEFINITIONS)}, not {definition!r}")


def extraction_strength_from_matches(
    greedy_match: np.ndarray, definition: str = ES_OPENUNLEARNING
) -> float:
    """ES from the greedy matches of a continuation's tokens (module docstring)."""
    check_es_definition(definition)
    matches = np.asarray(greedy_match, dtype=bool)
    if definition == ES_OPENUNLEARNING:
        matches = matches[:-1]
    if len(matches) == 0:
        return 0.0
    missed = np.flatnonzero(~matches)
    k = 0 if len(missed) == 0 else int(missed[-1]) + 1
    if definition == ES_OPENUNLEARNING:
        k = min(k, len(matches) - 1)
    return 1.0 - k / len(matches)


@dataclass(frozen=True)
class Memorisation:
    exact_memorisation: np.ndarray  # per sample
    extraction_strength: np.ndarray  # per sample


def memorisation(
    lm: LanguageModel,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 8,
    es_definition: str = ES_OPENUNLEARNING,
) -> Memorisation:
    """EM and ES of each continuation given its prefix (token ids), from one pass per batch."""
    check_es_definition(es_definition)
    scores = score_continuations(lm, prefixes, continuations, batch_size)
    return Memorisation(
        np.array([exact_memorisation_from_matches(s.greedy_match, es_definition)
                  for s in scores]),
        np.array([extraction_strength_from_matches(s.greedy_match, es_definition)
                  for s in scores]),
    )


def qa_token_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[QAPair | tuple[str, str]],
    max_length: int = 512,
) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, answer ids + EOS) per pair, exactly as training encodes them."""
    prefixes, continuations = [], []
    for pair in pairs:
        question, answer = (pair.question, pair.answer) if isinstance(pair, QAPair) else pair
        encoded = encode_qa(tokenizer, question, answer, max_length)
        cut = encoded.prompt_length
        prefixes.append(encoded.input_ids[:cut])
        continuations.append(encoded.input_ids[cut:])
    return prefixes, continuations


def qa_memorisation(
    lm: LanguageModel, pairs: Sequence[QAPair | tuple[str, str]], batch_size: int = 8,
    max_length: int = 512, es_definition: str = ES_OPENUNLEARNING,
) -> Memorisation:
    """EM and ES of each answer given its question prompt."""
    prefixes, continuations = qa_token_pairs(lm.tokenizer, pairs, max_length)
    return memorisation(lm, prefixes, continuations, batch_size, es_definition)


# --- fluency -----------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams / word n-grams; 1.0 for a text with no n-gram."""
    grams = _ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition_rate(text: str, n: int = 3) -> float:
    """The fraction of word n-grams that repeat an earlier n-gram of the same text."""
    grams = _ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def ngram_entropy(text: str) -> float:
    """(2/3 · H(bigrams) + 4/3 · H(trigrams)) / 2 in bits; 0 for a text of < 2 words."""
    tokens = words(text)
    entropies = []
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        counts = Counter(_ngrams(tokens, n))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        entropies.append(weight * h)
    return sum(entropies) / len(entropies)


REPEAT_UNIT_MAX = 4  # longest unit (in words) whose back-to-back repetition is counted


def longest_repeat_run(text: str, max_unit: int = REPEAT_UNIT_MAX) -> int:
    """The most words covered by a unit of 1..`max_unit` words repeated back to back (the
    unit, then at least one whole copy; a trailing partial copy counts), 0 when none is."""
    tokens = words(text)
    best = 0
    for unit in range(1, max_unit + 1):
        run = 0  # consecutive positions i with tokens[i] == tokens[i - unit]
        for i in range(unit, len(tokens)):
            run = run + 1 if tokens[i] == tokens[i - unit] else 0
            if run >= unit:
                best = max(best, run + unit)
    return best


@dataclass(frozen=True)
class Fluency:
    distinct_2: float
    repetition_3: float
    ngram_entropy: float
    samples: int
    longest_repeat_run: float = 0.0  # mean over texts
    max_repeat_run: int = 0  # the longest of any text

    def to_dict(self) -> dict:
        return {"distinct_2": self.distinct_2, "repetition_3": self.repetition_3,
                "ngram_entropy": self.ngram_entropy, "samples": self.samples,
                "longest_repeat_run": self.longest_repeat_run,
                "max_repeat_run": self.max_repeat_run}


def fluency(texts: Sequence[str]) -> Fluency:
    """Means over texts of distinct-2, trigram repetition, n-gram entropy and the longest
    repeat run; and the longest run of any text."""
    if not texts:
        return Fluency(1.0, 0.0, 0.0, 0)
    runs = [longest_repeat_run(t) for t in texts]
    return Fluency(
        distinct_2=float(np.mean([distinct_n(t, 2) for t in texts])),
        repetition_3=float(np.mean([repetition_rate(t, 3) for t in texts])),
        ngram_entropy=float(np.mean([ngram_entropy(t) for t in texts])),
        samples=len(texts),
        longest_repeat_run=float(np.mean(runs)),
        max_repeat_run=int(max(runs)),
    )


def mean_token_entropy(
    lm: LanguageModel,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 8,
) -> np.ndarray:
    """The model's mean next-token entropy (nats) over each continuation's positions."""
    scores = score_continuations(lm, prefixes, continuations, batch_size)
    return np.array([float(-s.vocab_mean.mean()) for s in scores])
