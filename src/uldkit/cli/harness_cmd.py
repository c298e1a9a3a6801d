"""`uldkit eval harness`: lm-evaluation-harness on any model uldkit loads."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from uldkit.cli import options
from uldkit.cli.eval_cmds import eval_app


@eval_app.command("harness")
def harness_command(
    model: str = typer.Option(..., "--model", help="A model directory or a uldkit run (ULD too)."),
    tasks: str = typer.Option(
        ..., "--tasks", help="Comma-separated lm-eval task names or task YAML paths "
        "(uldkit ships tofu_world_facts; `lm-eval ls tasks` lists lm-eval's)."),
    out: Path = typer.Option(..., "--out", help="Directory for lm-eval's results.json."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N documents per task."),
    num_fewshot: int = typer.Option(None, "--num-fewshot", min=0),
    seed: int = options.SEED,
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Run lm-evaluation-harness tasks on a model or an unlearned run; writes lm-eval's JSON."""
    import uldkit
    from uldkit.eval.harness import import_lm_eval, resolve_tasks, results_json, run_harness
    from uldkit.io import atomic_write_text
    from uldkit.training.run_dir import RunDir
    from uldkit.training.run_start import check_out_dir, start_run

    import_lm_eval()
    check_out_dir(out, overwrite=overwrite, resume=False)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    resolve_tasks(task_list)  # a bad task file is refused before the model loads
    hf_model, tokenizer = uldkit.load(
        model, device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    results = run_harness(hf_model, tokenizer, task_list, batch_size=batch_size, limit=limit,
                          num_fewshot=num_fewshot, seed=seed)
    config = {"model": model, "tasks": task_list, "batch_size": batch_size, "limit": limit,
              "num_fewshot": num_fewshot, "seed": seed, "device": device}
    with start_run(out, "eval harness", config, overwrite=overwrite) as run:
        atomic_write_text(run.summary("harness"), results_json(results))
    console = Console()
    for task, metrics in results.get("results", {}).items():
        shown = ", ".join(f"{key.split(',')[0]} {value:.4f}" for key, value in metrics.items()
                          if isinstance(value, float) and "stderr" not in key)
        console.print(f"{task}: {shown}", highlight=False, soft_wrap=True)
    console.print(f"results: {RunDir(Path(out)).summary('harness')}", highlight=False,
                  soft_wrap=True)
