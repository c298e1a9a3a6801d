"""`uldkit demo`: fine-tune, unlearn with each method, evaluate, report — on the synthetic world."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.training.run_dir import RunDir


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory (resumable)."),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated method names, or 'all' (see `uldkit "
        "methods`); default: uld, grad_diff and npo."),
    benchmark: str = typer.Option(
        "tofu", "--benchmark",
        help="tofu: QA data, TOFU metrics. muse: biography passages, MUSE metrics. "
        "tofu-real: the real TOFU files (a CPU subset; --full for all of TOFU)."),
    size: str = typer.Option("tiny", "--size", help="Model size: tiny or small."),
    people: int | None = typer.Option(
        None, "--people", min=10,
        help="People in the synthetic world (default: 40 for tofu, 100 for muse)."),
    holdout: int | None = typer.Option(
        None, "--holdout", min=1,
        help="Held-out people, never trained on: the MIA audit's non-members "
        "(default: 10 for tofu, 40 for muse)."),
    forget: str = typer.Option("forget10", "--forget", help="forget01, forget05 or forget10."),
    relearn: bool = typer.Option(
        True, "--relearn/--no-relearn",
        help="tofu: run the relearning attack on every unlearned model."),
    quantize: bool = typer.Option(
        True, "--quantize/--no-quantize",
        help="tofu: 8- and 4-bit weights of every unlearned model (needs optimum-quanto)."),
    target: Path | None = typer.Option(
        None, "--target", help="Use this fine-tuned target model instead of training one "
        "(with --retain)."),
    retain: Path | None = typer.Option(
        None, "--retain", help="Use this retain model instead of training one (with --target)."),
    seed: int = typer.Option(0, "--seed", help="First (or only) seed."),
    seeds: int = options.SEEDS,
    full: bool = typer.Option(
        False, "--full", help="tofu-real: all of TOFU (hours on a CPU) instead of the subset."),
    data: Path | None = typer.Option(
        None, "--data", help="tofu-real: TOFU's folder (default: $ULDKIT_TOFU_DIR)."),
    retain_authors: int | None = typer.Option(
        None, "--retain-authors", min=1,
        help="tofu-real: retain authors in the subset (default 20: retain_perturbed's)."),
) -> None:
    """Run the whole pipeline on the built-in synthetic world and print a comparison."""
    from uldkit.demo.seeds import run_demo_seeds
    from uldkit.demo.settings import DEFAULT_METHODS, DemoConfig
    from uldkit.report.seeds import seed_list

    seed_list(seed, seeds)  # --seeds 0: one line before anything runs

    console = Console()
    methods = ",".join(DEFAULT_METHODS) if methods is None else methods
    config = DemoConfig(
        out=str(out), methods=[m.strip() for m in methods.split(",") if m.strip()],
        benchmark=benchmark, size=size, people=people, holdout=holdout, forget=forget,
        seed=seed, relearn=relearn, quantize=quantize,
        target=None if target is None else str(target),
        retain=None if retain is None else str(retain), full=full,
        data=None if data is None else str(data), retain_authors=retain_authors)
    results = run_demo_seeds(
        config, seeds,
        log=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    console.print(summary_table(results))
    if seeds > 1:
        console.print(f"means over seeds {seed}..{seed + seeds - 1} (sample std and min-max of "
                      "each figure: results.json, report)", highlight=False, soft_wrap=True)
    run = RunDir(out)
    console.print(f"results: {run.summary('results')}   "
                  f"report: {RunDir(run.report_dir).report('html')}"
                  f"   total {results['wall_seconds'] / 60:.1f} min", soft_wrap=True)


def summary_table(results: dict) -> Table:
    if results.get("benchmark") == "muse":
        return _muse_table(results)
    world = "real TOFU" if results.get("benchmark") == "tofu-real" else "the synthetic world"
    table = Table(title=f"Unlearning on {world} (TOFU metrics)",
                  caption=_CAPTION, **_NARROW)
    columns = ("model", "forget\nquality ↑", "model\nutility ↑", "forget\nROUGE ↓",
               "forget\nProb. ↓", "forget\nES ↓", "ppl\n×retain", "MIA ↓", "time")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right",
                         no_wrap=True)
    for name, row in _rows(results):
        table.add_row(
            name,
            _fmt(row.get("forget_quality"), "{:.2e}"),
            _fmt(row.get("model_utility"), "{:.3f}"),
            _fmt(row.get("forget_rouge"), "{:.3f}"),
            _fmt(row.get("forget_prob"), "{:.3f}"),
            _fmt(row.get("forget_extraction_strength"), "{:.2f}"),
            _fmt((row.get("forget_answer_fluency") or {}).get("perplexity_ratio"), "{:.2f}"),
            _separating(row),
            _duration(row.get("train_seconds")),
        )
    return table


# No outer frame and no rules between columns, so every column fits in 80 (logs, CI).
_NARROW = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "padding": 0,
           "collapse_padding": True}
_CAPTION = ("ES: extraction strength of the forget answers. ppl ×retain: perplexity of the "
            "generated forget answers under the retain model, over that of the retain model's "
            "own (aim ≤ 1.5). MIA: membership-inference attacks that still separate forget "
            "from held-out data, of those run. time: training time.")


def _muse_table(results: dict) -> Table:
    table = Table(title="Unlearning passages of the synthetic world (MUSE metrics)",
                  caption=_CAPTION, **_NARROW)
    columns = (("VerbMem\nD_f ↓", "verbmem_forget"), ("KnowMem\nD_f ↓", "knowmem_forget"),
               ("PrivLeak\n→0", "privleak"), ("KnowMem\nD_r ↑", "knowmem_retain"),
               ("utility\nkept ↑", "utility_preserved"),
               ("forget\nES ↓", "forget_extraction_strength"))
    table.add_column("model", no_wrap=True)
    for title, _ in columns:
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("MIA ↓", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for name, row in _rows(results):
        muse = row.get("muse") or {}
        table.add_row(name, *(_fmt(muse.get(key), "{:.2f}") for _, key in columns),
                      _separating(row), _duration(row.get("train_seconds")))
    skipped = results.get("skipped") or {}
    if skipped:
        table.caption = f"{_CAPTION} Not run on passages: {', '.join(skipped)}."
    return table


def _rows(results: dict) -> list[tuple[str, dict]]:
    return [("target", results["target"]), ("retain", results["retain"]),
            *results["methods"].items()]


def _separating(row: dict) -> str:
    mia = row.get("mia")
    if not mia:
        return "—"
    return f"{len(mia.get('separating') or [])}/{len(mia.get('attacks') or [])}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 100:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 6000 else f"{seconds / 3600:.1f}h"


def _fmt(value, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)
