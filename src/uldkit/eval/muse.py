"""MUSE's evaluation (Shi et al., 2024) of an unlearned model on a document-style forget set.

- VerbMem on D_f: prompt with the first l tokens of each forget passage, greedy-generate as many
  tokens as the true continuation has (at most `max_continuation_tokens`), ROUGE-L F1 against
  that continuation, without stemming (MUSE's authors score it with the same logger as
  KnowMem: `rouge-score`, `use_stemmer=False`, the mean of the F-measures). l = min(`prompt_tokens` (32), n // 2) for a passage of n tokens, so a
  short passage keeps at least half of itself as the continuation to reproduce.
- KnowMem on D_f and on D_r: greedy answers to QA pairs about the passages, scored against
  the true answers; `knowmem` "muse" (default) as MUSE's authors compute it (in-context
  examples, 32 new tokens, ROUGE-L F1 without stemming), "uldkit" with the model's QA prompt,
  48 new tokens and ROUGE-L recall with stemming (`uldkit.eval.knowmem`).
- PrivLeak = (AUC_model - AUC_retain) / AUC_retain, with AUC the Min-K% Prob (k = 0.4) ROC AUC
  of forget passages against holdout passages; near 0 is ideal, large negative means
  over-unlearned, large positive under-unlearned.
- Utility preserved = KnowMem on D_r of the model / KnowMem on D_r of the target.
Beside them (METRICS.md, "Other"): exact memorisation and extraction strength of the forget
QA answers (teacher-forced, as in the TOFU summary) and of the VerbMem continuations given
their prompts ("verbatim_"), and the fluency of the generated forget answers.
Output keeps MUSE's column order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uldkit.data.documents import DocumentSplits, document_texts, leading_special_ids
from uldkit.data.types import QAPair
from uldkit.errors import DataError
from uldkit.eval.knowmem import KNOWMEM_MUSE, check_knowmem_variant, muse_rouge_l_f1
from uldkit.eval.knowmem import knowmem as knowmem_variant
from uldkit.eval.memorisation import Memorisation, fluency, memorisation, qa_memorisation
from uldkit.eval.mia import finite_or_none, mia_scores, roc_auc
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import LanguageModel
from uldkit.training.journal import JournalledStages

MUSE_STAGES = ("verbmem", "knowmem_forget", "knowmem_retain", "min_k", "forget_qa_memorisation",
               "verbatim_memorisation", "retain_min_k", "target_knowmem_retain")
MUSE_COLUMNS = ("verbmem_forget", "knowmem_forget", "privleak", "knowmem_retain",
                "utility_preserved")


@dataclass(frozen=True)
class MuseSettings:
    prompt_tokens: int = 32
    max_continuation_tokens: int = 128
    answer_tokens: int | None = None  # KnowMem: 32 (muse) or 48 (uldkit) when None
    knowmem: str = KNOWMEM_MUSE
    min_k: float = 0.4
    batch_size: int = 8
    max_tokens: int = 512  # passages are cut to this many tokens for PrivLeak


@dataclass
class MuseSummary:
    verbmem_forget: float
    knowmem_forget: float
    privleak: float | None  # None when the retain model's AUC is 0
    knowmem_retain: float
    utility_preserved: float | None  # None without a target model
    auc: float
    retain_auc: float
    knowmem_retain_target: float | None
    forget_answer_fluency: dict
    counts: dict
    forget_exact_memorisation: float | None = None
    forget_extraction_strength: float | None = None
    verbatim_exact_memorisation: float | None = None
    verbatim_extraction_strength: float | None = None

    def to_dict(self) -> dict:
        """MUSE's columns first, in MUSE's order, then what they were computed from."""
        return {
            "verbmem_forget": self.verbmem_forget,
            "knowmem_forget": self.knowmem_forget,
            "privleak": self.privleak,
            "knowmem_retain": self.knowmem_retain,
            "utility_preserved": self.utility_preserved,
            "privleak_auc": self.auc,
            "privleak_retain_auc": self.retain_auc,
            "knowmem_retain_target": self.knowmem_retain_target,
            "forget_exact_memorisation": self.forget_exact_memorisation,
            "forget_extraction_strength": self.forget_extraction_strength,
            "verbatim_exact_memorisation": self.verbatim_exact_memorisation,
            "verbatim_extraction_strength": self.verbatim_extraction_strength,
            "forget_answer_fluency": self.forget_answer_fluency,
            "counts": self.counts,
        }


@dataclass
class MuseResult:
    summary: MuseSummary
    samples: list[dict] = field(default_factory=list)  # each with a "metric" field


def privleak(auc: float, retain_auc: float) -> float | None:
    return None if retain_auc == 0 else (auc - retain_auc) / retain_auc


def verbmem_pairs(
    tokenizer, passages: Sequence[str], prompt_tokens: int = 32,
    max_continuation_tokens: int = 128,
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with leading specials, true continuation ids) per passage."""
    specials = leading_special_ids(tokenizer)
    pairs = []
    for index, text in enumerate(passages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            raise DataError(f"forget passage {index + 1} has fewer than 2 tokens")
        cut = min(prompt_tokens, len(ids) // 2)
        pairs.append((specials + ids[:cut], ids[cut:cut + max_continuation_tokens]))
    return pairs


def verbmem(
    lm: LanguageModel, passages: Sequence[str], settings: MuseSettings = MuseSettings()
) -> tuple[float, list[dict]]:
    """Mean ROUGE-L F1 (no stemming) of greedy continuations, and one record per passage."""
    pairs = verbmem_pairs(lm.tokenizer, passages, settings.prompt_tokens,
                          settings.max_continuation_tokens)
    decode = lm.tokenizer.decode
    records = []
    for start in range(0, len(pairs), settings.batch_size):
        chunk = pairs[start:start + settings.batch_size]
        longest = max(len(truth) for _, truth in chunk)
        generated = generate_ids(lm, [prompt for prompt, _ in chunk],
                                 GenerationSettings(max_new_tokens=longest))
        for offset, ((prompt, truth), ids) in enumerate(zip(chunk, generated)):
            text = decode(ids[:len(truth)], skip_special_tokens=True).strip()
            reference = decode(truth, skip_special_tokens=True).strip()
            records.append({
                "metric": "verbmem", "index": start + offset,
                "prompt": decode(prompt, skip_special_tokens=True), "continuation": reference,
                "generated": text, "rougeL_f1": muse_rouge_l_f1(text, reference),
            })
    return _mean(r["rougeL_f1"] for r in records), records


def knowmem(
    lm: LanguageModel, pairs: Sequence[QAPair], settings: MuseSettings = MuseSettings(),
    name: str = "knowmem", examples: Sequence[QAPair] = (),
) -> tuple[float, list[dict]]:
    """KnowMem (settings.knowmem's variant), and one record per QA pair."""
    return knowmem_variant(lm, pairs, variant=settings.knowmem, examples=examples,
                           answer_tokens=settings.answer_tokens,
                           batch_size=settings.batch_size, name=name)


def min_k_auc(
    lm: LanguageModel, forget: Sequence[str], holdout: Sequence[str],
    settings: MuseSettings = MuseSettings(),
) -> tuple[float, np.ndarray]:
    """Min-K% (k = settings.min_k) AUC of forget vs holdout passages, and the scores."""
    scores = mia_scores(lm, list(forget) + list(holdout), settings.min_k,
                        batch_size=settings.batch_size, max_tokens=settings.max_tokens)["min_k"]
    return roc_auc(scores[:len(forget)], scores[len(forget):]), scores


def evaluate_muse(
    lm: LanguageModel,
    data: DocumentSplits,
    retain_lm: LanguageModel,
    target_lm: LanguageModel | None = None,
    settings: MuseSettings = MuseSettings(),
    stages: JournalledStages | None = None,
) -> MuseResult:
    """VerbMem, KnowMem (forget, retain), PrivLeak and utility preserved of `lm`; with a
    journal behind `stages` (names: MUSE_STAGES), finished stages are not run again."""
    forget, holdout = document_texts(data.forget), document_texts(data.holdout)
    if not forget or not holdout:
        raise DataError("MUSE needs forget and holdout passages")
    if not len(data.forget_qa) or not len(data.retain_qa):
        raise DataError("MUSE needs QA pairs about the forget and the retain passages")
    check_knowmem_variant(settings.knowmem)
    stages = stages or JournalledStages(MUSE_STAGES)
    verb, verb_records = stages.run("verbmem", lambda: verbmem(lm, forget, settings))
    know_forget, forget_records = stages.run(
        "knowmem_forget", lambda: knowmem(lm, data.forget_qa, settings, "knowmem_forget",
                                          data.forget_qa_icl))
    know_retain, retain_records = stages.run(
        "knowmem_retain", lambda: knowmem(lm, data.retain_qa, settings, "knowmem_retain",
                                          data.retain_qa_icl))
    auc, scores = stages.run("min_k", lambda: _listed(min_k_auc(lm, forget, holdout, settings)))
    qa_scores = stages.run("forget_qa_memorisation", lambda: _listed(
        qa_memorisation(lm, data.forget_qa, settings.batch_size)))
    verbatim = verbmem_pairs(lm.tokenizer, forget, settings.prompt_tokens,
                             settings.max_continuation_tokens)
    verbatim_scores = stages.run("verbatim_memorisation", lambda: _listed(memorisation(
        lm, [p for p, _ in verbatim], [c for _, c in verbatim], settings.batch_size)))
    if retain_lm is lm:
        retain_auc, retain_scores = auc, scores
    else:
        retain_auc, retain_scores = stages.run("retain_min_k", lambda: _listed(
            min_k_auc(retain_lm, forget, holdout, settings)))
    target_know = None
    if target_lm is lm:
        target_know = know_retain
    elif target_lm is not None:
        target_know, _ = stages.run("target_knowmem_retain", lambda: knowmem(
            target_lm, data.retain_qa, settings, "knowmem_retain", data.retain_qa_icl))
    utility = None
    if target_know is not None:
        utility = know_retain / target_know if target_know > 0 else None
    mia_records = [
        {"metric": "privleak", "set": "forget" if i < len(forget) else "holdout",
         "index": i if i < len(forget) else i - len(forget),
         "min_k": finite_or_none(scores[i]),
         "retain_min_k": finite_or_none(retain_scores[i])}
        for i in range(len(scores))
    ]
    summary = MuseSummary(
        verbmem_forget=verb,
        knowmem_forget=know_forget,
        privleak=privleak(auc, retain_auc),
        knowmem_retain=know_retain,
        utility_preserved=utility,
        auc=auc,
        retain_auc=retain_auc,
        knowmem_retain_target=target_know,
        forget_answer_fluency=fluency([r["generated"] for r in forget_records]).to_dict(),
        counts={"forget_passages": len(forget), "holdout_passages": len(holdout),
                "forget_qa": len(data.forget_qa), "retain_qa": len(data.retain_qa)},
        forget_exact_memorisation=_mean(qa_scores["exact_memorisation"]),
        forget_extraction_strength=_mean(qa_scores["extraction_strength"]),
        verbatim_exact_memorisation=_mean(verbatim_scores["exact_memorisation"]),
        verbatim_extraction_strength=_mean(verbatim_scores["extraction_strength"]),
    )
    return MuseResult(summary, verb_records + forget_records + retain_records + mia_records)


def _listed(result: object) -> object:
    """A stage's result in JSON's types (arrays as lists, memorisation as a dict)."""
    if isinstance(result, Memorisation):
        return {"exact_memorisation": result.exact_memorisation.tolist(),
                "extraction_strength": result.extraction_strength.tolist()}
    auc, scores = result
    return [float(auc), np.asarray(scores, dtype=np.float64).tolist()]


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0
