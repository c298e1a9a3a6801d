"""`uldkit calibrate`: search a ULD run's alpha, tau and filter for the setting whose
membership-inference AUCs are closest to the retain model's at >= 98 % of the target's
utility (`uldkit.eval.calibration`); writes the frontier as a table, JSON and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.errors import ConfigError, ModelError
from uldkit.eval.calibration import (
    DEFAULT_ALPHAS,
    DEFAULT_MIN_UTILITY,
    DEFAULT_REFINE,
    DEFAULT_TAUS,
    DEFAULT_TOLERANCE,
    CalibrationGrid,
)
from uldkit.io import atomic_write_bytes, atomic_write_json
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import start_run

if TYPE_CHECKING:
    from uldkit.eval.calibration import Calibration, CalibrationPoint


@app.command("calibrate")
def calibrate_command(
    model: Path = typer.Option(..., "--model", help="A ULD run directory."),
    retain_model: Path = typer.Option(..., "--retain-model",
                                      help="Never trained on the forget set: the AUCs to match."),
    out: Path = typer.Option(..., "--out", help="Directory for calibration.json and the plot."),
    alpha: list[float] | None = typer.Option(
        None, "--alpha", help="Alpha values to try (repeat); default: "
        f"{', '.join(f'{a:g}' for a in DEFAULT_ALPHAS)}."),
    tau: list[float] | None = typer.Option(
        None, "--tau", help="Filter thresholds to try (repeat); default: 0 (no filter)."),
    filter: list[str] | None = typer.Option(
        None, "--filter", help="Relative-top filters to try (repeat): strict, reference; "
        "default: strict."),
    min_utility: float = typer.Option(DEFAULT_MIN_UTILITY, "--min-utility",
                                      help="Least model utility, as a share of the target's."),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, "--tolerance",
                                    help="Goal: every attack's AUC this close to the retain "
                                    "model's."),
    refine: int = typer.Option(DEFAULT_REFINE, "--refine",
                               help="Rounds of alpha midpoints around the best setting."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split: forget01/05/10."),
    data: str = options.DATA,
    holdout_data: Path | None = typer.Option(
        None, "--holdout-data", help="With --data other than synthetic: a JSON/JSONL file of "
        "QA pairs neither model trained on, the MIA audit's non-members (a tofu-real demo "
        "writes DIR/data/mia_holdout.json)."),
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    holdout: int | None = typer.Option(
        None, "--holdout", min=1, help="Held-out people (MIA non-members; default: the "
        "holdout_people the models were fine-tuned with)."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1,
                                       help="Cap on generated answers (TOFU ROUGE)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Search ULD's inference settings against the MIA audit; report the frontier."""
    from uldkit.data.sources import DataSource
    from uldkit.data.synthetic import generate_world
    from uldkit.data.tofu import load_tofu
    from uldkit.demo.stages import pair_mia_texts, qa_mia_texts
    from uldkit.eval.calibration import MiaData, calibrate_uld
    from uldkit.eval.tofu_eval import evaluate_tofu
    from uldkit.models.lm import LanguageModel
    from uldkit.report.calibration_plot import frontier_png
    from uldkit.uld.logit_difference import LogitDifferenceModel
    from uldkit.unlearning.load import load_language_model

    grid = CalibrationGrid(tuple(alpha or DEFAULT_ALPHAS), tuple(DEFAULT_TAUS if tau is None
                                                                 else tau),
                           tuple(filter or ("strict",)))
    if not 0 < min_utility <= 1 or tolerance < 0 or refine < 0:
        raise ConfigError("--min-utility must be in (0, 1], --tolerance and --refine >= 0")
    source = DataSource(data, people=people, seed=data_seed)
    if source.is_synthetic:
        if holdout_data is not None:
            raise ConfigError("--holdout-data is for --data other than synthetic (the "
                              "synthetic world's held-out people are --holdout)")
        holdout = holdout or _recorded_holdout(retain_model)
        if not holdout:
            raise ConfigError("the MIA audit needs held-out people: pass --holdout N (the "
                              "holdout_people the models were fine-tuned with)")
        texts = qa_mia_texts(generate_world(people, data_seed, holdout), source.load(forget))
    elif holdout_data is None:
        raise ConfigError("the MIA audit needs non-members: pass --holdout-data FILE, QA "
                          "pairs neither model trained on")
    else:
        texts = pair_mia_texts(source.load(forget), load_tofu(holdout_data),
                               f"in {holdout_data}")
    load = dict(device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    uld = load_language_model(model, **load)
    if not isinstance(uld, LogitDifferenceModel):
        raise ModelError(f"'{model}' is not a ULD run: only ULD has settings to calibrate")
    retain = load_language_model(retain_model, **load)
    retain_log, _ = evaluate_tofu(retain, source, forget, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, show_progress=False)

    def utility(lm: LanguageModel) -> tuple[float, float | None]:
        _, summary = evaluate_tofu(lm, source, forget, retain_log, batch_size=batch_size,
                                   max_new_tokens=max_new_tokens, show_progress=False)
        return summary.figures.model_utility, summary.figures.forget_quality

    config = {"model": str(model), "retain_model": str(retain_model),
              "alphas": list(grid.alphas), "taus": list(grid.taus),
              "filters": list(grid.filters), "min_utility": min_utility,
              "tolerance": tolerance, "refine": refine, "forget": forget, "data": data,
              "holdout_data": None if holdout_data is None else str(holdout_data),
              "people": people, "data_seed": data_seed, "holdout": holdout,
              "max_new_tokens": max_new_tokens,
              "device": device}
    console = Console()
    with start_run(out, "calibrate", config, overwrite=overwrite) as run:
        result = calibrate_uld(
            uld, retain, MiaData(texts.forget, texts.holdout, texts.forget_questions,
                                 texts.holdout_questions),
            utility, grid, min_utility=min_utility, tolerance=tolerance, refine=refine,
            batch_size=batch_size,
            on_point=lambda p: console.print(_point_line(p), highlight=False, soft_wrap=True))
        summary = {"model": str(model), "retain_model": str(retain_model),
                   "texts": texts.description, **result.to_dict()}
        atomic_write_json(run.summary("calibrate"), summary)
        atomic_write_bytes(run.report("frontier"), frontier_png(result))
    console.print(_frontier_table(result))
    console.print(f"[bold]{result.conclusion()}[/]", highlight=False, soft_wrap=True)
    console.print(f"written to {out}", highlight=False, soft_wrap=True)


def _recorded_holdout(model_dir: Path) -> int | None:
    value = RunDir(model_dir).recorded_setting("holdout_people")
    return value if isinstance(value, int) and value > 0 else None


def _point_line(point: CalibrationPoint) -> str:
    aucs = " ".join(f"{name} {auc:.3f}" for name, auc in point.aucs.items())
    return (f"{point.setting.label()}: MU {point.model_utility:.4f} "
            f"({point.utility_ratio:.1%}), AUC {aucs}, gap {point.gap:.3f}")


def _frontier_table(result: Calibration) -> Table:
    attacks = list(result.retain_aucs)
    table = Table(title="ULD calibration frontier (gap = max |AUC - retain AUC|)")
    for name in ("alpha", "tau", "filter", "MU / target", "forget quality", *attacks, "gap"):
        table.add_column(name, justify="right")
    table.add_row("retain", "", "", "", "", *(f"{result.retain_aucs[a]:.3f}" for a in attacks),
                  "")
    for point in result.frontier():
        quality = "" if point.forget_quality is None else f"{point.forget_quality:.2e}"
        table.add_row(f"{point.setting.alpha:g}", f"{point.setting.tau:g}",
                      point.setting.filter_label(), f"{point.utility_ratio:.1%}", quality,
                      *(f"{point.aucs[a]:.3f}" for a in attacks), f"{point.gap:.3f}")
    return table
