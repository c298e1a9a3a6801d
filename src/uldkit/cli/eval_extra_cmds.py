"""`uldkit eval muse` and `uldkit eval mia`: document-style evaluation and membership inference.

Data: the synthetic world's biographies (forget people, retain people, held-out people who
were never trained on), or your own files (--forget-docs, --holdout-docs; for MUSE also
--forget-qa, --retain-qa). For a fair holdout, the models must have been fine-tuned with the
same number of held-out people (`holdout_people`), so that their tokenizer covers them; by
default --holdout is read from the models' run_config.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.eval_cmds import eval_app
from uldkit.data.sources import SYNTHETIC
from uldkit.data.synthetic import generate_world
from uldkit.data.tofu import load_tofu
from uldkit.data.types import DocumentDataset, QADataset
from uldkit.errors import ConfigError, ModelError
from uldkit.eval.mia import DEFAULT_K, MARGIN, MIA_STAGES, MiaReport, mia_audit
from uldkit.io import atomic_write_json, atomic_write_text
from uldkit.training.journal import JournalledStages, SampleJournal, data_sha256
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import start_run

if TYPE_CHECKING:
    from uldkit.data.documents import DocumentSplits

RESUME = typer.Option(False, "--resume", help="Continue an interrupted run: stages it "
                      "finished are read back, not recomputed.")

FORGET = typer.Option("forget10", "--forget", help="Synthetic forget split: forget01/05/10.")
HOLDOUT = typer.Option(
    None, "--holdout", min=1, help="Synthetic world: held-out people (default: the "
    "holdout_people the models were fine-tuned with, from their run_config.json).")
FORGET_DOCS = typer.Option(None, "--forget-docs", help="Forget passages: a folder of .txt, "
                           "a JSON/JSONL file with 'text', or a saved dataset.")
HOLDOUT_DOCS = typer.Option(None, "--holdout-docs", help="Never-trained passages, as above.")
BATCH_SIZE = typer.Option(8, "--batch-size", min=1)
DTYPE = typer.Option(None, "--dtype", help="float32, bfloat16 or float16.")


@eval_app.command("muse")
def muse_command(
    model: Path = typer.Option(..., "--model", help="The model to evaluate."),
    retain_model: Path = typer.Option(..., "--retain-model", help="Never trained on forget."),
    out: Path = typer.Option(..., "--out", help="Directory for the summary and samples."),
    target: Path | None = typer.Option(
        None, "--target", help="The model before unlearning, for utility preserved."),
    data: str = options.DOCUMENT_DATA,
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    holdout: int | None = HOLDOUT,
    forget: str = FORGET,
    forget_docs: Path | None = FORGET_DOCS,
    holdout_docs: Path | None = HOLDOUT_DOCS,
    forget_qa: Path | None = typer.Option(None, "--forget-qa", help="QA about the forget "
                                          "passages (JSON/JSONL with question, answer)."),
    retain_qa: Path | None = typer.Option(None, "--retain-qa", help="QA about retain data."),
    prompt_tokens: int = typer.Option(32, "--prompt-tokens", min=1,
                                      help="VerbMem prompt length l (halved for short passages)."),
    max_continuation: int = typer.Option(128, "--max-continuation", min=1,
                                         help="VerbMem: most tokens to reproduce."),
    answer_tokens: int | None = typer.Option(
        None, "--answer-tokens", min=1,
        help="KnowMem: most answer tokens generated (default 32 for muse, 48 for uldkit)."),
    knowmem: str = typer.Option(
        "muse", "--knowmem", help="KnowMem as MUSE's authors compute it (muse: in-context "
        "examples, 32 tokens, ROUGE-L F1 unstemmed) or uldkit's variant (the model's QA "
        "prompt, ROUGE-L recall stemmed)."),
    forget_qa_icl: Path | None = typer.Option(
        None, "--forget-qa-icl", help="KnowMem in-context examples for the forget QA (MUSE's "
        "forget_qa_icl.json)."),
    retain_qa_icl: Path | None = typer.Option(
        None, "--retain-qa-icl", help="KnowMem in-context examples for the retain QA."),
    batch_size: int = BATCH_SIZE,
    overwrite: bool = options.OVERWRITE,
    resume: bool = RESUME,
    device: str = options.DEVICE,
    dtype: str | None = DTYPE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """MUSE: VerbMem and KnowMem on the forget set, PrivLeak, KnowMem on retain / utility."""
    # Imported here: torch and transformers would slow every other command's start.
    from uldkit.cli.loading import load_language_model
    from uldkit.data.documents import DocumentSplits, document_texts, load_documents
    from uldkit.eval.knowmem import check_knowmem_variant
    from uldkit.eval.muse import MUSE_STAGES, MuseSettings, evaluate_muse

    files = (forget_docs, holdout_docs, forget_qa, retain_qa)
    if any(f is not None for f in files):
        if any(f is None for f in files):
            raise ConfigError("with your own data, give all of --forget-docs, --holdout-docs, "
                              "--forget-qa and --retain-qa")
        splits = DocumentSplits(
            forget=load_documents(forget_docs), retain=DocumentDataset([], "retain"),
            holdout=load_documents(holdout_docs), forget_qa=_qa_file(forget_qa),
            retain_qa=_qa_file(retain_qa))
    else:
        splits = _synthetic_splits(data, people, data_seed, holdout, forget,
                                   [retain_model, target, model])
    check_knowmem_variant(knowmem)
    if forget_qa_icl is not None or retain_qa_icl is not None:
        splits = replace(
            splits,
            forget_qa_icl=() if forget_qa_icl is None else tuple(_qa_file(forget_qa_icl).pairs),
            retain_qa_icl=() if retain_qa_icl is None else tuple(_qa_file(retain_qa_icl).pairs))
    settings = MuseSettings(prompt_tokens=prompt_tokens, max_continuation_tokens=max_continuation,
                            answer_tokens=answer_tokens, batch_size=batch_size, knowmem=knowmem)
    load = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code)
    lm = load_language_model(model, **load)
    retain_lm = lm if _same(retain_model, model) else load_language_model(retain_model, **load)
    target_lm = None
    if target is not None:
        target_lm = lm if _same(target, model) else load_language_model(target, **load)

    config = {
        "model": str(model), "retain_model": str(retain_model),
        "target": None if target is None else str(target), "data": data, "people": people,
        "data_seed": data_seed, "holdout": holdout, "forget": forget,
        "forget_docs": _str(forget_docs), "holdout_docs": _str(holdout_docs),
        "forget_qa": _str(forget_qa), "retain_qa": _str(retain_qa),
        "forget_qa_icl": _str(forget_qa_icl), "retain_qa_icl": _str(retain_qa_icl),
        "settings": asdict(settings), "device": device, "dtype": dtype,
    }
    with start_run(out, "eval muse", config, overwrite=overwrite, resume=resume) as run:
        journal = _stage_journal(run.journal("muse"), config, MUSE_STAGES, [
            document_texts(splits.forget), document_texts(splits.holdout),
            [p.to_dict() for p in splits.forget_qa], [p.to_dict() for p in splits.retain_qa]])
        stages = JournalledStages(MUSE_STAGES, journal, resume)
        result = evaluate_muse(lm, splits, retain_lm, target_lm, settings, stages)
        summary = {"model": str(model), "retain_model": str(retain_model),
                   "target": None if target is None else str(target),
                   **result.summary.to_dict()}
        atomic_write_json(run.summary("muse"), summary)
        _write_jsonl(run.samples("muse"), result.samples)
        journal.remove()
    _say_resumed(stages)
    Console().print(_muse_table(summary))
    Console().print(
        f"memorisation: forget answers EM {_fmt(summary['forget_exact_memorisation'])}, "
        f"ES {_fmt(summary['forget_extraction_strength'])}; forget passages EM "
        f"{_fmt(summary['verbatim_exact_memorisation'])}, "
        f"ES {_fmt(summary['verbatim_extraction_strength'])}", highlight=False, soft_wrap=True)
    Console().print(f"written to {out}", highlight=False, soft_wrap=True)


@eval_app.command("mia")
def mia_command(
    model: Path = typer.Option(..., "--model", help="The model to audit."),
    out: Path = typer.Option(..., "--out", help="Directory for the summary and samples."),
    retain_model: Path | None = typer.Option(
        None, "--retain-model", help="Never trained on forget: the baseline AUC per attack."),
    reference: Path | None = typer.Option(
        None, "--reference", help="Reference model for the reference attack (L_ref - L)."),
    data: str = options.DOCUMENT_DATA,
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    holdout: int | None = HOLDOUT,
    forget: str = FORGET,
    forget_docs: Path | None = FORGET_DOCS,
    holdout_docs: Path | None = HOLDOUT_DOCS,
    k: float = typer.Option(DEFAULT_K, "--k", min=0.01, max=1.0,
                            help="Min-K% and Min-K%++: fraction of lowest tokens."),
    filter: str | None = options.ULD_FILTER,
    max_tokens: int = typer.Option(512, "--max-tokens", min=2, help="Passages are cut here."),
    batch_size: int = BATCH_SIZE,
    overwrite: bool = options.OVERWRITE,
    resume: bool = RESUME,
    device: str = options.DEVICE,
    dtype: str | None = DTYPE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Membership inference: per attack, forget vs holdout AUC and whether it still separates."""
    from uldkit.cli.loading import load_language_model
    from uldkit.data.documents import load_documents

    if (forget_docs is None) != (holdout_docs is None):
        raise ConfigError("give both --forget-docs and --holdout-docs, or neither")
    if forget_docs is not None:
        forget_set, holdout_set = load_documents(forget_docs), load_documents(holdout_docs)
    else:
        splits = _synthetic_splits(data, people, data_seed, holdout, forget,
                                   [retain_model, model])
        forget_set, holdout_set = splits.forget, splits.holdout
    load = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code)
    lm = load_language_model(model, **load, **({} if filter is None else {"filter": filter}))
    retain_lm = None if retain_model is None else load_language_model(retain_model, **load)
    reference_lm = None if reference is None else load_language_model(reference, **load)

    config = {
        "model": str(model), "retain_model": _str(retain_model), "reference": _str(reference),
        "data": data, "people": people, "data_seed": data_seed, "holdout": holdout,
        "forget": forget, "forget_docs": _str(forget_docs), "holdout_docs": _str(holdout_docs),
        "k": k, "margin": MARGIN, "max_tokens": max_tokens, "device": device, "dtype": dtype,
        **({} if filter is None else {"filter": filter}),  # older runs resume unchanged
        "batch_size": batch_size,
    }
    forget_texts, holdout_texts = [d.text for d in forget_set], [d.text for d in holdout_set]
    with start_run(out, "eval mia", config, overwrite=overwrite, resume=resume) as run:
        journal = _stage_journal(run.journal("mia"), config, MIA_STAGES,
                                 [forget_texts, holdout_texts])
        stages = JournalledStages(MIA_STAGES, journal, resume)
        report = mia_audit(lm, forget_texts, holdout_texts, reference=reference_lm,
                           retain_lm=retain_lm, k=k, batch_size=batch_size,
                           max_tokens=max_tokens, stages=stages)
        summary = {"model": str(model), "retain_model": _str(retain_model),
                   "reference": _str(reference), **report.summary_dict()}
        atomic_write_json(run.summary("mia"), summary)
        _write_jsonl(run.samples("mia"), report.samples)
        journal.remove()
    _say_resumed(stages)
    console = Console()
    console.print(_mia_table(report))
    for result in report.attacks:
        console.print(f"{result.attack}: {result.verdict}", highlight=False, soft_wrap=True)
    console.print(f"[bold]{report.conclusion()}[/]", highlight=False, soft_wrap=True)
    console.print(f"written to {out}", highlight=False, soft_wrap=True)


# --- helpers ------------------------------------------------------------------------------------
def _stage_journal(path: Path, config: dict[str, Any], stages: tuple[str, ...],
                   data: list[Any]) -> SampleJournal:
    """The journal of finished stages, tied to the settings (not the device) and the data."""
    identity = {key: value for key, value in config.items() if key != "device"}
    identity["data_sha256"] = data_sha256(data)
    return SampleJournal(path, identity, len(stages))


def _say_resumed(stages: JournalledStages) -> None:
    if stages.resumed:
        Console().print(f"resumed: {', '.join(stages.resumed)} read from the journal",
                        highlight=False, soft_wrap=True)


def _synthetic_splits(
    data: str, people: int, seed: int, holdout: int | None, forget: str,
    model_dirs: list[Path | None],
) -> DocumentSplits:
    from uldkit.data.documents import synthetic_document_splits

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


def _recorded_holdout(model_dirs: list[Path | None]) -> int | None:
    for directory in model_dirs:
        if directory is None:
            continue
        value = RunDir(directory).recorded_setting("holdout_people")
        if isinstance(value, int) and value > 0:
            return value
    return None


def _qa_file(path: Path) -> QADataset:
    return load_tofu(path)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _muse_table(summary: dict) -> Table:
    table = Table(title="MUSE")
    columns = (("VerbMem on D_f", "verbmem_forget"), ("KnowMem on D_f", "knowmem_forget"),
               ("PrivLeak", "privleak"), ("KnowMem on D_r", "knowmem_retain"),
               ("Utility preserved", "utility_preserved"))
    for title, _ in columns:
        table.add_column(title, justify="right")
    table.add_row(*(_fmt(summary[key]) for _, key in columns))
    table.caption = (f"PrivLeak from Min-K% (k=0.4) AUC {summary['privleak_auc']:.4f} vs "
                     f"retain model {summary['privleak_retain_auc']:.4f}")
    return table


def _mia_table(report: MiaReport) -> Table:
    table = Table(title=f"Membership inference: forget ({report.n_forget}) vs holdout "
                  f"({report.n_holdout}) passages")
    table.add_column("attack")
    table.add_column("AUC", justify="right")
    table.add_column("retain AUC", justify="right")
    table.add_column("still separates?")
    for result in report.attacks:
        table.add_row(result.attack, _fmt(result.auc), _fmt(result.retain_auc),
                      "yes" if result.separates else "no")
    return table
