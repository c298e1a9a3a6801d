"""MUSE and MIA runs: their data, and their run directory (run_config.json, a journal of
finished stages for --resume, the summary and the per-sample log). `uldkit.evaluate` and so
`uldkit eval muse|mia` go through here.

Data: the synthetic world's biographies (forget people, held-out people who were never
trained on), or your own files. For a fair holdout the models must have been fine-tuned
with the same number of held-out people (`holdout_people`), so that their tokenizer covers
them; by default `holdout` is read from the models' run_config.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from uldkit.data.documents import (
    DocumentSplits,
    document_texts,
    load_documents,
    synthetic_document_splits,
)
from uldkit.data.sources import SYNTHETIC
from uldkit.data.synthetic import generate_world
from uldkit.data.tofu import load_tofu
from uldkit.data.types import DocumentDataset
from uldkit.errors import ConfigError, ModelError
from uldkit.eval.mia import MIA_STAGES, mia_audit
from uldkit.eval.muse import MUSE_STAGES, MuseSettings, evaluate_muse
from uldkit.io import atomic_write_json, atomic_write_text
from uldkit.models.lm import LanguageModel
from uldkit.training.journal import JournalledStages, SampleJournal, data_sha256
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import start_run

PathLike = str | os.PathLike
OnResume = Callable[[list[str]], None]


def muse_splits(
    *, data: str, people: int, data_seed: int, holdout: int | None, forget: str,
    model_dirs: Sequence[Path | None], forget_docs: PathLike | None = None,
    holdout_docs: PathLike | None = None, forget_qa: PathLike | None = None,
    retain_qa: PathLike | None = None, forget_qa_icl: PathLike | None = None,
    retain_qa_icl: PathLike | None = None,
) -> DocumentSplits:
    """MUSE's passages and QA: your four files, else the synthetic world's `forget` split;
    KnowMem's in-context examples from files when given."""
    files = (forget_docs, holdout_docs, forget_qa, retain_qa)
    if any(f is not None for f in files):
        if any(f is None for f in files):
            raise ConfigError("with your own data, give all of --forget-docs, --holdout-docs, "
                              "--forget-qa and --retain-qa")
        splits = DocumentSplits(
            forget=load_documents(forget_docs), retain=DocumentDataset([], "retain"),
            holdout=load_documents(holdout_docs), forget_qa=load_tofu(forget_qa),
            retain_qa=load_tofu(retain_qa))
    else:
        splits = synthetic_splits(data, people, data_seed, holdout, forget, model_dirs)
    if forget_qa_icl is not None or retain_qa_icl is not None:
        splits = replace(
            splits,
            forget_qa_icl=() if forget_qa_icl is None else tuple(load_tofu(forget_qa_icl).pairs),
            retain_qa_icl=() if retain_qa_icl is None else tuple(load_tofu(retain_qa_icl).pairs))
    return splits


def mia_passages(
    *, data: str, people: int, data_seed: int, holdout: int | None, forget: str,
    model_dirs: Sequence[Path | None], forget_docs: PathLike | None = None,
    holdout_docs: PathLike | None = None,
) -> tuple[list[str], list[str]]:
    """The audit's (forget, holdout) passages: your two files, else the synthetic world's."""
    if (forget_docs is None) != (holdout_docs is None):
        raise ConfigError("give both --forget-docs and --holdout-docs, or neither")
    if forget_docs is not None:
        forget_set, holdout_set = load_documents(forget_docs), load_documents(holdout_docs)
    else:
        splits = synthetic_splits(data, people, data_seed, holdout, forget, model_dirs)
        forget_set, holdout_set = splits.forget, splits.holdout
    return [d.text for d in forget_set], [d.text for d in holdout_set]


def synthetic_splits(data: str, people: int, seed: int, holdout: int | None, forget: str,
                     model_dirs: Sequence[Path | None]) -> DocumentSplits:
    if data != SYNTHETIC:
        raise ConfigError(f"--data '{data}': document evaluation reads the synthetic world; "
                          "for your own data give --forget-docs and --holdout-docs")
    for directory in model_dirs:
        if directory is not None and not directory.is_dir():
            raise ModelError(f"model directory not found: {directory}")
    if holdout is None:
        holdout = _recorded_holdout(model_dirs)
    if not holdout:
        raise ConfigError("the synthetic world needs held-out people: pass --holdout N (the "
                          "holdout_people the models were fine-tuned with)")
    return synthetic_document_splits(generate_world(people, seed, holdout), forget)


def _recorded_holdout(model_dirs: Sequence[Path | None]) -> int | None:
    for directory in model_dirs:
        if directory is None:
            continue
        value = RunDir(directory).recorded_setting("holdout_people")
        if isinstance(value, int) and value > 0:
            return value
    return None


def muse_run(
    lm: LanguageModel, splits: DocumentSplits, retain_lm: LanguageModel,
    target_lm: LanguageModel | None, settings: MuseSettings, *, names: dict[str, Any],
    config: dict[str, Any], out: PathLike | None = None, overwrite: bool = False,
    resume: bool = False, on_resume: OnResume | None = None,
) -> dict[str, Any]:
    """MUSE's summary, `names` (the models' records) first; with `out`, the run directory
    `uldkit eval muse` writes, `config` its run_config.json record."""
    if out is None:
        result = evaluate_muse(lm, splits, retain_lm, target_lm, settings)
        return {**names, **result.summary.to_dict()}
    with start_run(out, "eval muse", config, overwrite=overwrite, resume=resume) as run:
        journal = _stage_journal(run.journal("muse"), config, MUSE_STAGES, [
            document_texts(splits.forget), document_texts(splits.holdout),
            [p.to_dict() for p in splits.forget_qa], [p.to_dict() for p in splits.retain_qa]])
        stages = JournalledStages(MUSE_STAGES, journal, resume)
        result = evaluate_muse(lm, splits, retain_lm, target_lm, settings, stages)
        summary = {**names, **result.summary.to_dict()}
        atomic_write_json(run.summary("muse"), summary)
        _write_jsonl(run.samples("muse"), result.samples)
        journal.remove()
    _tell_resumed(stages, on_resume)
    return summary


def muse_config(names: dict[str, Any], data: dict[str, Any], settings: MuseSettings,
                device: str | None, dtype: str | None) -> dict[str, Any]:
    """run_config.json's record of a MUSE run (a resume compares it, key by key)."""
    return {**names, **data, "settings": asdict(settings), "device": device, "dtype": dtype}


def mia_run(
    lm: LanguageModel, forget_texts: list[str], holdout_texts: list[str], *,
    reference: LanguageModel | None, retain_lm: LanguageModel | None, k: float,
    batch_size: int, max_tokens: int, names: dict[str, Any], config: dict[str, Any],
    out: PathLike | None = None, overwrite: bool = False, resume: bool = False,
    on_resume: OnResume | None = None,
) -> dict[str, Any]:
    """The audit's summary, `names` first; with `out`, the run directory `uldkit eval mia`
    writes, `config` its run_config.json record."""
    audit = dict(reference=reference, retain_lm=retain_lm, k=k, batch_size=batch_size,
                 max_tokens=max_tokens)
    if out is None:
        report = mia_audit(lm, forget_texts, holdout_texts, **audit)
        return {**names, **report.summary_dict()}
    with start_run(out, "eval mia", config, overwrite=overwrite, resume=resume) as run:
        journal = _stage_journal(run.journal("mia"), config, MIA_STAGES,
                                 [forget_texts, holdout_texts])
        stages = JournalledStages(MIA_STAGES, journal, resume)
        report = mia_audit(lm, forget_texts, holdout_texts, stages=stages, **audit)
        summary = {**names, **report.summary_dict()}
        atomic_write_json(run.summary("mia"), summary)
        _write_jsonl(run.samples("mia"), report.samples)
        journal.remove()
    _tell_resumed(stages, on_resume)
    return summary


def _stage_journal(path: Path, config: dict[str, Any], stages: tuple[str, ...],
                   data: list[Any]) -> SampleJournal:
    """The journal of finished stages, tied to the settings (not the device) and the data."""
    identity = {key: value for key, value in config.items() if key != "device"}
    identity["data_sha256"] = data_sha256(data)
    return SampleJournal(path, identity, len(stages))


def _tell_resumed(stages: JournalledStages, on_resume: OnResume | None) -> None:
    if stages.resumed and on_resume is not None:
        on_resume(list(stages.resumed))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
