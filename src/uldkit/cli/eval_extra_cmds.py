"""`uldkit eval muse` and `uldkit eval mia`: document-style evaluation and membership inference.

Data: the synthetic world's biographies (forget people, retain people, held-out people who
were never trained on), or your own files (--forget-docs, --holdout-docs; for MUSE also
--forget-qa, --retain-qa). For a fair holdout, the models must have been fine-tuned with the
same number of held-out people (`holdout_people`), so that their tokenizer covers them; by
default --holdout is read from the models' run_config.json.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.eval_cmds import eval_app
from uldkit.eval.mia import DEFAULT_K

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
    import uldkit

    summary = uldkit.evaluate(
        model, benchmark="muse", out=out, retain_model=retain_model, target=target, data=data,
        people=people, data_seed=data_seed, holdout=holdout, split=forget,
        forget_docs=forget_docs, holdout_docs=holdout_docs, forget_qa=forget_qa,
        retain_qa=retain_qa, forget_qa_icl=forget_qa_icl, retain_qa_icl=retain_qa_icl,
        prompt_tokens=prompt_tokens, max_continuation=max_continuation,
        answer_tokens=answer_tokens, knowmem=knowmem, batch_size=batch_size,
        overwrite=overwrite, resume=resume, device=device, dtype=dtype,
        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, on_resume=_say_resumed)
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
    import uldkit

    summary = uldkit.evaluate(
        model, benchmark="mia", out=out, retain_model=retain_model, reference=reference,
        data=data, people=people, data_seed=data_seed, holdout=holdout, split=forget,
        forget_docs=forget_docs, holdout_docs=holdout_docs, k=k, filter=filter,
        max_tokens=max_tokens, batch_size=batch_size, overwrite=overwrite, resume=resume,
        device=device, dtype=dtype, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, on_resume=_say_resumed)
    console = Console()
    console.print(_mia_table(summary))
    for result in summary["attacks"]:
        console.print(f"{result['attack']}: {result['verdict']}", highlight=False,
                      soft_wrap=True)
    console.print(f"[bold]{summary['conclusion']}[/]", highlight=False, soft_wrap=True)
    console.print(f"written to {out}", highlight=False, soft_wrap=True)


# --- helpers ------------------------------------------------------------------------------------
def _say_resumed(stages: list[str]) -> None:
    Console().print(f"resumed: {', '.join(stages)} read from the journal",
                    highlight=False, soft_wrap=True)


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


def _mia_table(summary: dict) -> Table:
    table = Table(title=f"Membership inference: forget ({summary['n_forget']}) vs holdout "
                  f"({summary['n_holdout']}) passages")
    table.add_column("attack")
    table.add_column("AUC", justify="right")
    table.add_column("retain AUC", justify="right")
    table.add_column("still separates?")
    for result in summary["attacks"]:
        table.add_row(result["attack"], _fmt(result["auc"]), _fmt(result["retain_auc"]),
                      "yes" if result["separates"] else "no")
    return table
