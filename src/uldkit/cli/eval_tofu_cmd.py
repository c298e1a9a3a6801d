"""`uldkit eval tofu`: TOFU evaluation of a model, or an alpha sweep of one ULD model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.eval_cmds import _components_table, eval_app
from uldkit.data.sources import DataSource
from uldkit.errors import ConfigError, UldkitError
from uldkit.eval.tofu_log import FORGET_SET
from uldkit.io import atomic_write_json
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import start_run

if TYPE_CHECKING:
    from uldkit.models.lm import LanguageModel

RETAIN_DIR = "retain"


@eval_app.command("tofu")
def tofu_command(
    model: Path = typer.Option(..., "--model", help="Model directory (plain, ULD or offset)."),
    split: str = typer.Option("forget10", "--split", help="Forget split: forget01/05/10."),
    out: Path = typer.Option(..., "--out", help="Directory for the logs and summary."),
    data: str = options.DATA,
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    retain_logs: Path | None = typer.Option(
        None, "--retain-logs", help="For forget quality: the retain model's TOFU log (file or "
        "directory), or the retain model's directory (evaluated first, into OUT/retain)."),
    alpha: list[float] | None = typer.Option(
        None, "--alpha", help="ULD models: strength of the logit difference. Repeat to sweep "
        "several values on one model (OUT/alpha_<a>/ each)."),
    tau: float | None = typer.Option(None, "--tau", help="ULD models: its tau setting."),
    filter: str | None = options.ULD_FILTER,
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1,
        help="Cap on generated answer tokens; default: TOFU's 200 tokens of prompt + answer."),
    max_length: int = typer.Option(512, "--max-length", min=8,
                                   help="Longest question + answer scored, in tokens."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the sets and samples a "
                                "previous run into OUT finished (nothing is recomputed)."),
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    log_format: str = typer.Option(
        "tofu", "--log-format", help="tofu: uldkit's log (the TOFU authors' layout); "
        "openunlearning: also OpenUnlearning's TOFU_EVAL.json and TOFU_SUMMARY.json."),
    es_definition: str = typer.Option(
        "openunlearning", "--es-definition", help="Extraction strength: openunlearning "
        "(answer tokens without EOS, as published numbers) or uldkit (EOS counted); "
        "docs/metrics.md."),
    strip_prompt_space: bool = typer.Option(
        False, "--strip-prompt-space", help="Drop trailing spaces from rendered prompts (a "
        "template ending in ' ', like OpenUnlearning's Llama-2 one, scores every answer "
        "after a lone space token)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    seeds: int = typer.Option(
        1, "--seeds", help="Evaluate the runs of `uldkit unlearn --seeds N`: MODEL/seed-<s>/ "
        "for this many seeds from --seed on, each into OUT/seed-<s>/; OUT/summary.json holds "
        "every figure's mean over them, with the sample std, min-max and the seeds' values."),
    seed: int = typer.Option(0, "--seed", help="With --seeds: the first seed."),
) -> None:
    """Score a model on TOFU's four sets; write the per-sample log and the figures."""
    if seeds != 1:
        arguments = dict(locals())
        _evaluate_seeds(arguments)
        return
    # Imported here: torch and transformers would slow every other command's start.
    from uldkit.cli.loading import load_language_model
    from uldkit.data.formatting import strip_prompt_space as strip_space
    from uldkit.eval.log_formats import read_tofu_log
    from uldkit.eval.memorisation import check_es_definition
    from uldkit.eval.tofu_eval import check_retain_log, tofu_eval_sets

    check_es_definition(es_definition)
    if log_format not in ("tofu", "openunlearning"):
        raise ConfigError(f"--log-format must be tofu or openunlearning, not {log_format!r}")
    alphas = list(alpha or [])
    if len(set(alphas)) != len(alphas):
        raise ConfigError(f"--alpha values repeat: {alphas}")
    source = DataSource(data, people=people, seed=data_seed)
    sets = tofu_eval_sets(source, split)  # bad split or data: fail before loading a model
    load = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code)
    extra = {key: value for key, value in (("tau", tau), ("filter", filter))
             if value is not None}
    retain_is_model = retain_logs is not None and _is_model_dir(retain_logs)
    retain_log = None
    if retain_logs is not None and not retain_is_model:
        retain_log = read_tofu_log(retain_logs, (FORGET_SET,))[0]
        check_retain_log(retain_log, sets[FORGET_SET])
    lm = load_language_model(model, **load, **extra, **({"alpha": alphas[0]} if alphas else {}))
    if strip_prompt_space:
        strip_space(lm.tokenizer)

    config = {
        "model": str(model), "split": split, "data": data, "people": people,
        "data_seed": data_seed, "retain_logs": None if retain_logs is None else str(retain_logs),
        "alpha": alphas or None, "tau": tau, "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "max_length": max_length, "device": device,
        "dtype": dtype, "es_definition": es_definition, "log_format": log_format,
        "strip_prompt_space": strip_prompt_space,
        **({} if filter is None else {"filter": filter}),  # older runs resume unchanged
    }
    console = Console()
    run_settings = dict(split=split, data=data, people=people, data_seed=data_seed,
                        batch_size=batch_size, max_new_tokens=max_new_tokens,
                        max_length=max_length, resume=resume, show_progress=not quiet,
                        es_definition=es_definition)
    # batch size changes the speed, not the scores (see tofu_eval's identity)
    with start_run(out, "eval tofu", config, overwrite=overwrite, resume=resume,
                   may_differ=("batch_size",)) as run:
        if retain_is_model:
            console.print(f"evaluating the retain model {retain_logs}", highlight=False,
                          soft_wrap=True)
            try:
                retain_lm = load_language_model(retain_logs, **load)
                if strip_prompt_space:
                    strip_space(retain_lm.tokenizer)
            except UldkitError:
                if not resume:  # the directory holds nothing but this run's configuration
                    shutil.rmtree(run.path, ignore_errors=True)
                raise
            retain_log, retain_summary = _evaluate(
                retain_lm, None, run.path / RETAIN_DIR, str(retain_logs),
                {**run_settings, "reference": retain_lm})
            _write_format(log_format, retain_log, run.path / RETAIN_DIR, None)
            _print_summary(console, retain_summary, out / RETAIN_DIR)
        # perplexity of the forget answers: under the retain model, else under the target
        reference, reference_name = (
            (retain_lm, str(retain_logs)) if retain_is_model
            else _target_reference(model, lm, load, strip_prompt_space))
        run_settings.update(reference=reference, reference_name=reference_name)

        if not alphas:
            log, summary = _evaluate(lm, retain_log, run.path, _label(model, None, tau),
                                     run_settings)
            _write_format(log_format, log, run.path, retain_log)
            _print_summary(console, summary, out)
            return
        rows = []
        for value in alphas:
            view = _with_alpha(lm, model, value, extra, load)
            if strip_prompt_space:
                strip_space(view.tokenizer)
            alpha_dir = f"alpha_{value:g}"
            log, summary = _evaluate(view, retain_log, run.path / alpha_dir,
                                     _label(model, value, tau), run_settings)
            _write_format(log_format, log, run.path / alpha_dir, retain_log)
            rows.append({"alpha": value, "tau": tau, "out": str(out / alpha_dir),
                         **_headline(summary)})
        atomic_write_json(run.summary("eval"),
                          {"model": str(model), "split": split, "sweep": rows})
    console.print(_sweep_table(rows))


def _target_reference(model: Path, lm: Any, load: dict[str, Any],
                      strip_prompt_space: bool) -> tuple[Any, str]:
    from uldkit.data.formatting import strip_prompt_space as strip_space
    from uldkit.eval.answer_perplexity import fluency_reference_path
    from uldkit.unlearning.load import load_language_model

    path = fluency_reference_path(model)
    if Path(path).resolve() == model.resolve():
        return lm, path
    reference = load_language_model(path, **load)
    if strip_prompt_space:
        strip_space(reference.tokenizer)
    return reference, path


def _evaluate_seeds(arguments: dict[str, Any]) -> None:
    """`--seeds N`: this command on MODEL/seed-<s> into OUT/seed-<s> for each seed, then the
    figures over seeds in OUT/summary.json. A retain model is evaluated once, with the first
    seed; the later seeds reuse its log."""
    from uldkit.report.seeds import combine_seeds, seed_dir, seed_list

    seeds = seed_list(arguments["seed"], arguments["seeds"])
    model, out = Path(arguments["model"]), Path(arguments["out"])
    missing = [str(seed_dir(model, s)) for s in seeds if not seed_dir(model, s).exists()]
    if missing:
        raise ConfigError(f"--seeds {len(seeds)}: no run {missing[0]} (`uldkit unlearn "
                          "--seeds N --out MODEL` writes MODEL/seed-<s>/)")
    retain_logs = arguments["retain_logs"]
    summaries = []
    for number, s in enumerate(seeds):
        Console().print(f"[seeds] seed {s} ({number + 1} of {len(seeds)}): {seed_dir(model, s)}",
                        highlight=False, soft_wrap=True)
        tofu_command(**{**arguments, "model": seed_dir(model, s), "out": seed_dir(out, s),
                        "retain_logs": retain_logs, "seeds": 1})
        if retain_logs is not None and _is_model_dir(retain_logs):
            retain_logs = seed_dir(out, s) / RETAIN_DIR
        summary = json.loads(RunDir(seed_dir(out, s)).summary("eval").read_text())
        summaries.append({key: summary[key] for key in ("figures", "sweep") if key in summary})
    combined = combine_seeds(summaries, seeds)
    combined.update({"model": str(model), "split": arguments["split"],
                     "runs": [str(seed_dir(out, s)) for s in seeds]})
    atomic_write_json(RunDir(out).summary("eval"), combined)
    figures = combined["over_seeds"]["figures"]
    for key in ("forget_quality", "model_utility"):
        spread = figures.get(f"figures/{key}")
        if spread is not None and spread["std"] is not None:
            Console().print(f"{key.replace('_', ' ')} over seeds {seeds[0]}..{seeds[-1]}: "
                            f"{spread['mean']:.3g} ± {spread['std']:.2g} (sample std; min "
                            f"{spread['min']:.3g}, max {spread['max']:.3g})", highlight=False,
                            soft_wrap=True)
    Console().print(f"figures over seeds: {RunDir(out).summary('eval')}", highlight=False,
                    soft_wrap=True)


def _evaluate(lm: LanguageModel, retain_log: dict[str, Any] | None, out: Path, name: str,
              settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`uldkit.evaluate` into `out`: the log it wrote there and its summary."""
    import uldkit
    from uldkit.eval.tofu_log import load_tofu_log

    summary = uldkit.evaluate(lm, benchmark="tofu", retain_logs=retain_log, out=out,
                              model_name=name, **settings)
    return load_tofu_log(out), summary


def _write_format(log_format: str, log: dict[str, Any], out: Path,
                  retain_log: dict[str, Any] | None) -> None:
    if log_format == "openunlearning":
        from uldkit.eval.openunlearning_log import save_openunlearning

        save_openunlearning(log, out, retain_log)


def _label(model: Path, alpha: float | None, tau: float | None) -> str:
    """The model and the settings given to it (a resumed run must use the same)."""
    settings = [f"{name}={value:g}" for name, value in (("alpha", alpha), ("tau", tau))
                if value is not None]
    return f"{model} ({', '.join(settings)})" if settings else str(model)


def _is_model_dir(path: Path) -> bool:
    from uldkit.models.gguf import is_gguf_path

    if is_gguf_path(path) and path.is_file():
        return True
    return path.is_dir() and ((path / "config.json").is_file() or RunDir(path).manifest.is_file())


def _with_alpha(
    lm: LanguageModel, model: Path, alpha: float, extra: dict[str, Any], load: dict[str, Any]
) -> LanguageModel:
    """`lm` with another alpha: a cheap view when the model offers one, else a reload."""
    from uldkit.cli.loading import load_language_model

    with_settings = getattr(lm, "with_settings", None)
    if with_settings is not None:
        return with_settings(alpha=alpha, **extra)
    return load_language_model(model, **load, **extra, alpha=alpha)


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    return {**summary["figures"], "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"]}


def _print_summary(console: Console, summary: dict[str, Any], out: Path) -> None:
    from uldkit.eval.tofu_metrics import TofuSummary

    figures = TofuSummary(**summary["figures"])
    console.print(_components_table(figures))
    console.print(f"Model Utility   {figures.model_utility:.4f}", soft_wrap=True)
    if figures.forget_quality is None:
        console.print("Forget Quality  n/a (pass --retain-logs)", soft_wrap=True)
    else:
        console.print(f"Forget Quality  {figures.forget_quality:.3e}"
                      f"  (KS statistic {figures.ks_statistic:.4f})", soft_wrap=True)
    fluency = figures.forget_answer_fluency or {}
    if fluency.get("perplexity") is not None:
        ratio = fluency.get("perplexity_ratio")
        console.print(f"Forget answers  perplexity {fluency['perplexity']:.2f} under "
                      f"{summary['settings'].get('fluency_reference')}"
                      + ("" if ratio is None else f", {ratio:.2f}x the retain model's answers")
                      + f"; longest repeat {fluency.get('max_repeat_run', 0)} words",
                      highlight=False, soft_wrap=True)
    rate = summary["samples_per_second"]
    console.print(
        f"{sum(summary['samples'].values())} samples in {summary['seconds']:.1f}s"
        + ("" if rate is None else f" ({rate:.1f} samples/s)")
        + (f", reused {len(summary['resumed_sets'])} finished set(s)"
           if summary["resumed_sets"] else "")
        + (f", reused {sum(summary['resumed_samples'].values())} finished sample(s)"
           if summary["resumed_samples"] else "")
        + f"; results in {out}", highlight=False, soft_wrap=True)


def _sweep_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="TOFU alpha sweep")
    for name in ("alpha", "Model Utility", "Forget Quality", "forget ROUGE", "forget Prob.",
                 "retain ROUGE"):
        table.add_column(name, justify="right")
    for row in rows:
        quality = row["forget_quality"]
        table.add_row(
            f"{row['alpha']:g}", f"{row['model_utility']:.4f}",
            "n/a" if quality is None else f"{quality:.3e}",
            f"{row['forget_rouge']:.4f}", f"{row['forget_prob']:.4f}",
            f"{row['retain_rouge']:.4f}",
        )
    return table

