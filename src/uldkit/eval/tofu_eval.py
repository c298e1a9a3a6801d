"""TOFU evaluation of any `LanguageModel`: per-sample scores in TOFU's log format, then figures.

Each of the four sets (forget split, `retain_perturbed`, `real_authors_perturbed`,
`world_facts_perturbed`) is scored in two passes:

- losses: every (question, answer) pair of the set - true answer, paraphrased answer, each
  perturbed answer - goes into one `answer_scores` call; with `shared_prefix` (default)
  each question's prompt runs once and its answers are scored from its cached keys and
  values (`uldkit.models.prefix_scoring`); the values do not depend on batch size or
  padding side;
- greedy generation of the answer, stopped at EOS or the length cap, and its ROUGE-1 /
  ROUGE-L recall against the true answer (`rouge-score`, stemming on, as TOFU). With
  `shared_prefix`, generation starts from what the loss pass already computed: the model's
  argmax at each true-answer position is its greedy choice as long as the answer so far is
  what it would have generated, so its greedy answer is known up to the first token where
  it departs from the true answer, and decoding resumes only after that (a model that
  reproduces an answer to its end costs no decoding step for it). The text is the same.

The forget set also gets, per sample, the exact memorisation and extraction strength of the
true answer (`uldkit.eval.memorisation`), read from the argmax of the loss pass's own
scores of that answer; the summary adds their means and the fluency of the generated forget answers.

Length cap: TOFU generates with `max_length=200` tokens for prompt and answer together. With
`max_new_tokens=None` each sample gets the same: 200 minus its prompt length (at least 1).
TOFU applies that limit to the padded batch, so its cap depends on the batch; ours is per
sample and batch-independent. An integer `max_new_tokens` is a fixed cap instead.

Samples are scored in batches of `batch_size`, taken in order of prompt length. With
`out_dir`, each finished batch is appended to `partial/<set>.samples.jsonl` (flushed and
fsynced), and each finished set is written to `partial/<set file>`; a later call with
`resume=True` reuses every finished set and every finished sample computed with the same
settings, recomputing nothing, and ends with the log an uninterrupted run writes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rouge_score import rouge_scorer

from uldkit.data.formatting import encode_prompt, fit_prompt, format_prompt, strips_prompt_space
from uldkit.data.sources import DataSource
from uldkit.data.tofu import retain_split_for
from uldkit.data.types import QADataset, QAPair
from uldkit.errors import ConfigError, DataError, ModelError
from uldkit.eval.answer_perplexity import perplexity_figures
from uldkit.eval.memorisation import (
    ES_OPENUNLEARNING,
    check_es_definition,
    exact_memorisation_from_matches,
    extraction_strength_from_matches,
    fluency,
    qa_memorisation,
)
from uldkit.eval.progress import SampleProgress
from uldkit.eval.tofu_log import (
    EXACT_MEMORISATION,
    EXTRACTION_STRENGTH,
    FORGET_SET,
    GENERATED_TEXT,
    MEMORISATION_FIELDS,
    REAL_AUTHORS_SET,
    RETAIN_SET,
    ROUGE_L_F1,
    WORLD_FACTS_SET,
    TofuLog,
    answers_mismatch,
    columns_from_samples,
    sample_indices,
    save_tofu_log,
    true_answers,
    validate_set_log,
    validate_tofu_log,
)
from uldkit.eval.tofu_metrics import SET_NAMES, TofuSummary, aggregate_tofu
from uldkit.io import atomic_write_json
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import LanguageModel
from uldkit.models.scoring import answer_scores
from uldkit.training.journal import SampleJournal, check_identity, data_sha256
from uldkit.training.run_dir import RunDir

TOFU_GENERATION_MAX_LENGTH = 200  # TOFU's generation limit, prompt and answer tokens together
EVAL_SPLITS = {
    RETAIN_SET: "retain_perturbed",
    REAL_AUTHORS_SET: "real_authors_perturbed",
    WORLD_FACTS_SET: "world_facts_perturbed",
}
# Sets without a paraphrase: the true answer takes its place, and Prob. is normalised.
ANSWER_AS_PARAPHRASE_SETS = (REAL_AUTHORS_SET, WORLD_FACTS_SET)
# Share of a sample's progress given to scoring; generation gets the rest.
_SCORING_SHARE = 0.5


@dataclass(frozen=True)
class TofuEvalSummary:
    """What `summary.json` holds: the figures, what was evaluated how, and how fast."""

    figures: TofuSummary
    model: str
    settings: dict[str, Any]
    samples: dict[str, int]
    set_seconds: dict[str, float]
    seconds: float
    samples_per_second: float | None
    resumed_sets: tuple[str, ...] = field(default_factory=tuple)
    resumed_samples: dict[str, int] = field(default_factory=dict)  # of the other sets

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "figures": self.figures.to_dict(),
            "settings": self.settings,
            "samples": self.samples,
            "set_seconds": self.set_seconds,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "resumed_sets": list(self.resumed_sets),
            "resumed_samples": self.resumed_samples,
        }


def tofu_eval_sets(source: DataSource, forget_split: str) -> dict[str, QADataset]:
    """The four evaluation sets, keyed by TOFU's log file names."""
    retain_split_for(forget_split)  # a forget split name, or DataError
    splits = {FORGET_SET: forget_split, **EVAL_SPLITS}
    return {key: source.load(split) for key, split in splits.items()}


def evaluate_tofu(
    lm: LanguageModel,
    source: DataSource,
    forget_split: str,
    retain_log: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    max_length: int = 512,
    padding_side: str = "right",
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    show_progress: bool = True,
    model_name: str | None = None,
    es_definition: str = ES_OPENUNLEARNING,
    shared_prefix: bool = True,
    reference: LanguageModel | None = None,
    reference_name: str | None = None,
) -> tuple[TofuLog, TofuEvalSummary]:
    """Score `lm` on the four TOFU sets and aggregate (forget quality needs `retain_log`).

    With `reference` (the retain model, else the target), the fluency of the generated forget
    answers adds their perplexity under it, and, with a `retain_log` that holds the retain
    model's answers, theirs and the ratio (`uldkit.eval.answer_perplexity`).
    With `out_dir`, writes `partial/<set>` after each set, then `eval_log_aggregated.json`
    and `summary.json`, all atomically.
    """
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError("max_new_tokens must be at least 1")
    check_es_definition(es_definition)
    name = model_name or getattr(lm, "name", type(lm).__name__)
    sets = tofu_eval_sets(source, forget_split)
    if retain_log is not None:
        check_retain_log(retain_log, sets[FORGET_SET])
    settings = {
        "data": source.location,
        **({"people": source.people, "data_seed": source.seed} if source.is_synthetic else {}),
        "forget_split": forget_split,
        "max_new_tokens": max_new_tokens,
        "generation_cap": (
            f"{max_new_tokens} new tokens" if max_new_tokens is not None
            else f"{TOFU_GENERATION_MAX_LENGTH} tokens of prompt and answer (TOFU)"
        ),
        "max_length": max_length,
        "es_definition": es_definition,
        "strip_prompt_space": strips_prompt_space(lm.tokenizer),
        "batch_size": batch_size,
        "padding_side": padding_side,
        # ULD's alpha, tau and relative-top filter: they make every figure
        **({"inference": dict(lm.inference_settings)}
           if hasattr(lm, "inference_settings") else {}),
    }
    # What the scores depend on: a partial set computed otherwise is not reused.
    identity = {k: v for k, v in settings.items() if k not in ("batch_size", "padding_side")}
    identity["model"] = name
    run = None if out_dir is None else RunDir(Path(out_dir))

    log: dict[str, Any] = {}
    resumed: list[str] = []
    if resume and run is not None:
        for key, data in sets.items():
            set_log = _read_partial(run.partial_set(key), identity, len(data))
            if set_log is not None:
                if key == FORGET_SET and not set(MEMORISATION_FIELDS) <= set(set_log):
                    # finished by a version without memorisation: add just that
                    set_log = {**set_log, **memorisation_columns(
                        lm, data.pairs, batch_size, max_length, es_definition)}
                    atomic_write_json(run.partial_set(key),
                                      {"identity": identity, "set_log": set_log})
                log[key] = set_log
                resumed.append(key)
                _journal(run, key, identity, data).remove()

    todo = [key for key in sets if key not in log]
    journals = {} if run is None else {
        key: _journal(run, key, identity, sets[key]) for key in todo}
    finished = {key: journals[key].start(resume) if key in journals else {} for key in todo}
    computed = sum(len(sets[k]) - len(finished[k]) for k in todo)
    set_seconds: dict[str, float] = {}
    with SampleProgress(computed, "TOFU", show_progress) as progress:
        for key in todo:
            progress.describe(f"TOFU {SET_NAMES[key].replace('_', ' ')}")
            journal = journals.get(key)
            started = time.perf_counter()
            log[key] = score_tofu_set(
                lm, sets[key].pairs, answer_as_paraphrase=key in ANSWER_AS_PARAPHRASE_SETS,
                batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=max_length,
                padding_side=padding_side, on_progress=progress.advance, where=sets[key].name,
                finished=finished[key], on_records=None if journal is None else journal.append,
                memorisation=key == FORGET_SET, es_definition=es_definition,
                shared_prefix=shared_prefix,
            )
            set_seconds[key] = time.perf_counter() - started
            if journal is not None:
                if finished[key]:
                    validate_set_log(log[key], str(journal.path))
                atomic_write_json(run.partial_set(key), {"identity": identity, "set_log": log[key]})
                journal.remove()

    log = {key: log[key] for key in sets}  # TOFU's set order
    figures = aggregate_tofu(log, retain_log)
    if reference is not None:
        figures = replace(figures, forget_answer_fluency=answer_fluency(
            reference, sets[FORGET_SET], log[FORGET_SET], retain_log, batch_size, max_length))
        settings["fluency_reference"] = reference_name or getattr(
            reference, "name", type(reference).__name__)
    seconds = sum(set_seconds.values())
    summary = TofuEvalSummary(
        figures=figures,
        model=name,
        settings=settings,
        samples={key: len(data) for key, data in sets.items()},
        set_seconds={key: round(value, 3) for key, value in set_seconds.items()},
        seconds=round(seconds, 3),
        samples_per_second=computed / seconds if seconds > 0 else None,
        resumed_sets=tuple(resumed),
        resumed_samples={key: len(finished[key]) for key in todo if finished[key]},
    )
    if run is not None:
        save_tofu_log(log, run.tofu_log)
        atomic_write_json(run.summary("eval"), summary.to_dict())
    return log, summary


def answer_fluency(
    reference: LanguageModel, forget: QADataset, forget_log: Mapping[str, Any],
    retain_log: Mapping[str, Any] | None = None, batch_size: int = 16, max_length: int = 512,
) -> dict[str, Any] | None:
    """The fluency of the generated forget answers (`memorisation.fluency`) with their
    perplexity under `reference` (and the retain model's answers' and the ratio, when
    `retain_log` has them); None when the log holds no generated answers."""
    answers = generated_answers(forget_log, len(forget))
    if answers is None:
        return None
    retain = None if retain_log is None else generated_answers(retain_log[FORGET_SET],
                                                               len(forget))
    questions = [pair.question for pair in forget.pairs]
    return {**fluency(answers).to_dict(),
            **perplexity_figures(reference, questions, answers, retain, batch_size, max_length)}


def generated_answers(set_log: Mapping[str, Any], size: int) -> list[str] | None:
    """The generated answer of every sample 0..size-1 of a set log, or None if it lacks one."""
    generated = set_log.get(GENERATED_TEXT)
    if not isinstance(generated, Mapping):
        return None
    texts = [generated.get(str(i)) for i in range(size)]
    if any(not isinstance(t, (list, tuple)) or len(t) < 2 for t in texts):
        return None
    return [str(t[1]) for t in texts]


def score_tofu_set(
    lm: LanguageModel,
    pairs: Sequence[QAPair],
    *,
    answer_as_paraphrase: bool = False,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    max_length: int = 512,
    padding_side: str = "right",
    on_progress: Callable[[float], None] | None = None,
    where: str = "set",
    finished: Mapping[int, Mapping[str, Any]] | None = None,
    on_records: Callable[[dict[int, dict[str, Any]]], None] | None = None,
    memorisation: bool = False,
    es_definition: str = ES_OPENUNLEARNING,
    shared_prefix: bool = True,
) -> dict[str, dict[str, Any]]:
    """One set's TOFU log: `{field: {index: value}}` with every field TOFU writes (with
    `memorisation`, also each true answer's exact memorisation and extraction strength).

    Samples go in batches of `batch_size`, in order of prompt length (as `greedy_answers`
    batches them). `finished` holds records computed before (by sample index): those are
    not scored again. `on_records` receives each batch's new records as it finishes.
    """
    _check_pairs(pairs, answer_as_paraphrase, where)
    advance = on_progress or (lambda _: None)
    records: dict[int, Mapping[str, Any]] = dict(finished or {})
    prompt_lengths = [len(encode_prompt(lm.tokenizer, p.question)) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: prompt_lengths[i])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for start in range(0, len(order), batch_size):
        todo = [i for i in order[start:start + batch_size] if i not in records]
        if not todo:
            continue
        fresh = _score_samples(
            lm, pairs, todo, scorer, answer_as_paraphrase=answer_as_paraphrase,
            batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=max_length,
            padding_side=padding_side, advance=advance, where=where,
            memorisation=memorisation, es_definition=es_definition,
            shared_prefix=shared_prefix,
        )
        records.update(fresh)
        if on_records is not None:
            on_records(fresh)
    if memorisation:  # records finished by a version without memorisation
        older = {i: r for i, r in records.items() if EXACT_MEMORISATION not in r}
        if older:
            records.update(_with_memorisation(lm, pairs, older, batch_size, max_length,
                                              es_definition))
    if any(ROUGE_L_F1 not in record for record in records.values()):
        # some records were finished by a version without it: a column must be complete
        records = {i: {k: v for k, v in r.items() if k != ROUGE_L_F1} for i, r in records.items()}
    return columns_from_samples([records[i] for i in range(len(pairs))])


def _with_memorisation(
    lm: LanguageModel, pairs: Sequence[QAPair], records: Mapping[int, Mapping[str, Any]],
    batch_size: int, max_length: int, es_definition: str,
) -> dict[int, dict[str, Any]]:
    """The records with the exact memorisation and extraction strength of their answers."""
    indices = list(records)
    scores = qa_memorisation(lm, [pairs[i] for i in indices], batch_size, max_length,
                             es_definition)
    return {i: {**records[i], EXACT_MEMORISATION: float(em), EXTRACTION_STRENGTH: float(es)}
            for i, em, es in zip(indices, scores.exact_memorisation,
                                 scores.extraction_strength)}


def memorisation_columns(
    lm: LanguageModel, pairs: Sequence[QAPair], batch_size: int = 16, max_length: int = 512,
    es_definition: str = ES_OPENUNLEARNING,
) -> dict[str, dict[str, float]]:
    """Per-sample exact memorisation and extraction strength of the true answers (given
    the question prompt, answer + EOS as trained), as log columns."""
    scores = qa_memorisation(lm, pairs, batch_size, max_length, es_definition)
    return {
        EXACT_MEMORISATION: {str(i): float(v) for i, v in enumerate(scores.exact_memorisation)},
        EXTRACTION_STRENGTH: {str(i): float(v)
                              for i, v in enumerate(scores.extraction_strength)},
    }


def _score_samples(
    lm: LanguageModel,
    pairs: Sequence[QAPair],
    indices: Sequence[int],
    scorer: rouge_scorer.RougeScorer,
    *,
    answer_as_paraphrase: bool,
    batch_size: int,
    max_new_tokens: int | None,
    max_length: int,
    padding_side: str,
    advance: Callable[[float], None],
    where: str,
    memorisation: bool = False,
    es_definition: str = ES_OPENUNLEARNING,
    shared_prefix: bool = True,
) -> dict[int, dict[str, Any]]:
    """The TOFU records `{index: {field: value}}` of the samples `indices` of `pairs`; with
    `memorisation`, EM and ES of the true answers come from the same scoring pass."""
    # Flatten every (question, answer) to score into one list; equal pairs are scored once.
    slots: dict[tuple[str, str], int] = {}

    def slot(question: str, answer: str) -> int:
        return slots.setdefault((question, answer), len(slots))

    gt = {i: slot(pairs[i].question, pairs[i].answer) for i in indices}
    paraphrased = {
        i: slot(pairs[i].question,
                pairs[i].answer if answer_as_paraphrase else pairs[i].paraphrased_answer)
        for i in indices
    }
    perturbed = {i: [slot(pairs[i].question, a) for a in pairs[i].perturbed_answers]
                 for i in indices}
    questions, answers = zip(*slots)
    share = _SCORING_SHARE * len(indices) / len(slots)
    scored = answer_scores(
        lm, questions, answers, batch_size, max_length, padding_side,
        on_batch=lambda n: advance(n * share), greedy_matches=memorisation or shared_prefix,
        shared_prefix=shared_prefix,
    )
    sums, counts = scored.sums, scored.counts
    if not np.isfinite(sums).all():
        bad = next(i for i in indices if not np.isfinite(
            sums[[gt[i], paraphrased[i], *perturbed[i]]]).all())
        raise ModelError(
            f"{where} sample {bad}: the model gives a token of an answer zero probability "
            "or a NaN score (non-finite loss); a model that filters tokens, like ULD with "
            "tau > 0, can give zero: evaluate it with tau 0"
        )
    means = sums / np.maximum(counts, 1)

    answers_generated = greedy_answers(
        lm, [pairs[i].question for i in indices], max_new_tokens, batch_size,
        on_answers=lambda n: advance(n * (1 - _SCORING_SHARE)), max_length=max_length,
        known=[scored.greedy_continuation(gt[i]) for i in indices] if shared_prefix else None,
    )
    generated = dict(zip(indices, answers_generated))
    samples = {}
    for i in indices:
        pair = pairs[i]
        rouge = scorer.score(pair.answer, generated[i])
        perturb_means = [float(means[s]) for s in perturbed[i]]
        record = {
            "avg_gt_loss": float(means[gt[i]]),
            "gt_loss": float(sums[gt[i]]),
            "num_token_gt": int(counts[gt[i]]),
            "generated_text": [format_prompt(lm.tokenizer, pair.question), generated[i],
                               pair.answer],
            "rouge1_recall": float(rouge["rouge1"].recall),
            "rougeL_recall": float(rouge["rougeL"].recall),
            ROUGE_L_F1: float(rouge["rougeL"].fmeasure),
            "average_perturb_loss": perturb_means,
            "avg_paraphrased_loss": float(means[paraphrased[i]]),
            "truth_ratio": _stored_truth_ratio(means[paraphrased[i]] - np.mean(perturb_means)),
            "paraphrased_loss": float(sums[paraphrased[i]]),
            "perturb_loss": [float(sums[s]) for s in perturbed[i]],
            "num_token_paraphrased": int(counts[paraphrased[i]]),
            "num_token_perturb": [int(counts[s]) for s in perturbed[i]],
        }
        if answer_as_paraphrase:
            # -log(P(a) / (P(a) + sum_i P(perturbed_i))), P = exp(-mean loss)
            log_probs = -np.asarray([means[gt[i]], *perturb_means])
            record["normalized_gt_loss"] = float(
                means[gt[i]] + np.logaddexp.reduce(log_probs)
            )
        if memorisation:
            matches = scored.greedy_matches[gt[i]]
            record[EXACT_MEMORISATION] = exact_memorisation_from_matches(
                matches, es_definition)
            record[EXTRACTION_STRENGTH] = extraction_strength_from_matches(
                matches, es_definition)
        samples[i] = record
    return samples


def greedy_answers(
    lm: LanguageModel,
    questions: Sequence[str],
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    on_answers: Callable[[int], None] | None = None,
    max_length: int | None = None,
    known: Sequence[Sequence[int]] | None = None,
) -> list[str]:
    """Greedy answers (text after the prompt), each cut at EOS or its cap (module docstring).

    Prompts are batched by length; a row decoded past its own cap is cut back to it, which
    gives what decoding it alone would. With `max_length`, a prompt of that many tokens or
    more keeps its last `max_length // 2` (as in scoring), with a warning. `known`: per
    question, the first tokens of the model's greedy answer to the prompt so encoded, as
    the scoring pass found them (`generate_ids`): decoding resumes after them.
    """
    prompts = [encode_prompt(lm.tokenizer, q) for q in questions]
    if max_length is not None:
        cut = sum(len(prompt) >= max_length for prompt in prompts)
        if cut:
            warnings.warn(f"{cut} of {len(prompts)} questions are longer than max_length "
                          f"{max_length} tokens: generation sees their last {max_length // 2}",
                          stacklevel=2)
            prompts = [fit_prompt(prompt, max_length) for prompt in prompts]
    caps = [
        max_new_tokens if max_new_tokens is not None
        else max(1, TOFU_GENERATION_MAX_LENGTH - len(prompt))
        for prompt in prompts
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        settings = GenerationSettings(max_new_tokens=max(caps[i] for i in chunk))
        outputs = generate_ids(lm, [prompts[i] for i in chunk], settings,
                               None if known is None else [known[i] for i in chunk])
        for i, ids in zip(chunk, outputs):
            answers[i] = lm.tokenizer.decode(ids[:caps[i]], skip_special_tokens=True).strip()
        if on_answers is not None:
            on_answers(len(chunk))
    return answers


def _stored_truth_ratio(log_ratio: float) -> float:
    # Informational field (aggregation recomputes R from the losses); clipped so that a
    # wildly unlearned sample still gives a finite, valid log entry.
    return math.exp(min(max(float(log_ratio), -700.0), 700.0))


def _check_pairs(pairs: Sequence[QAPair], answer_as_paraphrase: bool, where: str) -> None:
    if not pairs:
        raise DataError(f"{where}: no samples to evaluate")
    counts = set()
    for index, pair in enumerate(pairs):
        if pair.paraphrased_answer is None and not answer_as_paraphrase:
            raise DataError(
                f"{where} sample {index}: no paraphrased_answer (TOFU evaluation needs it)"
            )
        if not pair.perturbed_answers:
            raise DataError(
                f"{where} sample {index}: no perturbed answers (TOFU evaluation needs them)"
            )
        counts.add(len(pair.perturbed_answers))
    if len(counts) > 1:
        raise DataError(
            f"{where}: samples have different numbers of perturbed answers {sorted(counts)}"
        )


def check_retain_log(retain_log: Mapping[str, Any], forget: int | QADataset) -> None:
    """DataError unless `retain_log` has a valid forget set of the forget split's size (and,
    given the split's data and a log with the answers, of its questions)."""
    validate_tofu_log(retain_log, "retain log", required_sets=(FORGET_SET,))
    forget_size = forget if isinstance(forget, int) else len(forget)
    size = len(sample_indices(retain_log[FORGET_SET]))
    if size != forget_size:
        raise DataError(
            f"the retain log's forget set has {size} samples but this forget split has "
            f"{forget_size}: it was made for another split"
        )
    logged = true_answers(retain_log[FORGET_SET])
    if logged is not None and not isinstance(forget, int):
        mismatch = answers_mismatch(
            {str(i): pair.answer for i, pair in enumerate(forget.pairs)}, logged)
        if mismatch is not None:
            raise DataError(f"the retain log holds other questions than forget split "
                            f"{forget.name}: {mismatch}")


def _read_partial(path: Path, identity: dict[str, Any], size: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # an unreadable partial result is recomputed
    check_identity(path, stored.get("identity") if isinstance(stored, dict) else None, identity)
    set_log = stored.get("set_log")
    validate_set_log(set_log, str(path))
    if len(sample_indices(set_log)) != size:
        raise ConfigError(f"{path} holds {len(sample_indices(set_log))} samples, not {size}")
    return set_log


def _journal(run: RunDir, key: str, identity: dict[str, Any],
             data: QADataset) -> SampleJournal:
    """The file of finished samples of one set, tied to the settings and to the data."""
    return SampleJournal(
        run.partial_samples(key),
        {**identity, "set": key, "samples": len(data),
         "data_sha256": data_sha256([pair.to_dict() for pair in data.pairs])},
        len(data),
    )
