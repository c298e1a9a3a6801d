"""`uldkit sweep`: methods over a grid of lr, epochs and ULD's alpha, with seeds; the frontier."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.errors import ConfigError
from uldkit.training.run_dir import RunDir


def number_list(text: str | None, flag: str, kind: type = float) -> list | None:
    """'1e-3,5e-3' as numbers; None when the option was not given."""
    if text is None:
        return None
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise ConfigError(f"{flag}: '{part}' is not a {kind.__name__}") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} values repeat: {text}")
    return values


@app.command("sweep")
def sweep_command(
    target: Path = typer.Option(..., "--target", help="The target model (fine-tuned on "
                                "everything), e.g. runs/demo/target."),
    retain: Path = typer.Option(..., "--retain", help="The retain model (never saw the "
                                "forget set), e.g. runs/demo/retain: forget quality's reference."),
    out: Path = typer.Option(..., "--out", help="Sweep directory (resumable)."),
    methods: str = typer.Option("uld,grad_diff,npo", "--methods",
                                help="Comma-separated methods (see `uldkit methods`)."),
    lr: str | None = typer.Option(None, "--lr", help="Comma-separated learning rates "
                                  "(default: each method's demo-scale one)."),
    epochs: str | None = typer.Option(None, "--epochs", help="Comma-separated epoch counts "
                                      "(default: each method's demo-scale one)."),
    alpha: str | None = typer.Option(None, "--alpha", help="ULD: comma-separated alphas, each "
                                     "an evaluation of the same assistant (default: its own)."),
    data: str = options.DATA,
    people: int | None = typer.Option(None, "--people", min=2, help="Synthetic world: number "
                                      "of people (default: the target's)."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1,
                                       help="Cap on generated answer tokens."),
    seed: int = typer.Option(0, "--seed", help="First (or only) unlearning seed."),
    seeds: int = options.SEEDS,
) -> None:
    """Unlearn with each method at each grid point and seed, evaluate, and plot every
    method's forget quality against model utility on one figure (OUT/frontier.png, .md)."""
    from uldkit.demo.sweep import SweepConfig, grid, run_sweep
    from uldkit.report.seeds import seed_list

    config = SweepConfig(
        target=str(target), retain=str(retain), out=str(out),
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        lr=number_list(lr, "--lr"), epochs=number_list(epochs, "--epochs", int),
        alpha=number_list(alpha, "--alpha"), seeds=seeds, seed=seed, data=data,
        people=people, forget=forget, max_new_tokens=max_new_tokens)
    seed_list(seed, seeds)
    grid(config)  # an empty grid or an unknown method: one line before anything runs
    console = Console()
    run_sweep(config, log=lambda line: console.print(line, highlight=False, markup=False,
                                                    soft_wrap=True))
    run = RunDir(out)
    console.print(run.report("frontier_table").read_text(), highlight=False, soft_wrap=True)
    console.print(f"frontier: {run.report('frontier')}   table: {run.report('frontier_table')}"
                  f"   report: uldkit report {out} --out {run.report_dir}", highlight=False,
                  soft_wrap=True)
