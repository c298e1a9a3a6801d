"""`uldkit unlearn`: run any registered unlearning method on a target model."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json

METHOD_DEFAULT = "Default: the method's own."

def parse_params(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are Python literals where they parse as one, else strings."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param '{item}' is not of the form KEY=VALUE")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            params[key] = text
    return params


@app.command("unlearn")
def unlearn_command(
    method: str = typer.Option(..., "--method", help="Method name (see `uldkit methods`)."),
    model: str = typer.Option(..., "--model", help="The target model directory."),
    out: Path = typer.Option(..., "--out", help="Directory for the unlearned model."),
    data: str = options.DATA,
    forget: str = typer.Option("forget10", "--forget", help="Forget split."),
    retain: str = typer.Option(None, "--retain",
                               help="Retain split (default: the forget split's complement; "
                               "with --forget-documents none unless given)."),
    forget_documents: str = typer.Option(
        None, "--forget-documents",
        help="Forget passages instead of the forget QA pairs (MUSE-style): a folder of .txt, "
        "a JSON/JSONL file with 'text', a saved dataset, or synthetic:<people split>."),
    retain_documents: str = typer.Option(
        None, "--retain-documents", help="Passages to keep (retain side), as above."),
    epochs: int = options.training_option("epochs", None, "--epochs", METHOD_DEFAULT),
    lr: float = options.training_option("lr", None, "--lr", METHOD_DEFAULT),
    batch_size: int = options.training_option("batch_size", None, "--batch-size", METHOD_DEFAULT),
    grad_accum: int = options.training_option("grad_accum", None, "--grad-accum", METHOD_DEFAULT),
    max_steps: int = typer.Option(None, "--max-steps", min=1,
                                  help="Stop after this many optimizer steps."),
    max_length: int = typer.Option(128, "--max-length", min=8),
    checkpoint_every: int = options.training_option(
        "checkpoint_every", None, "--checkpoint-every", "Default: each epoch."),
    param: list[str] = typer.Option(
        [], "--param", help="Method hyperparameter KEY=VALUE (Python literal or text), checked "
        "against the method's schema; repeatable. `uldkit methods METHOD` lists them."),
    assistant: Path = typer.Option(
        None, "--assistant",
        help="ULD: continue this existing assistant on the union of its forget requests and "
        "this one (the target stays untouched)."),
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    seed: int = options.SEED,
    seeds: int = options.SEEDS,
    resume: bool = options.RESUME,
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Unlearn the forget split from a target model with any registered method."""
    from accelerate import PartialState

    import uldkit
    from uldkit.unlearning.catalog import get_method

    method_cls = get_method(method)
    hyperparameters = parse_params(param)
    if assistant is not None:
        if method_cls.name != "uld":
            raise ConfigError(f"--assistant continues a ULD assistant; method '{method}' has none")
        if assistant.resolve() == out.resolve():
            raise ConfigError("--assistant and --out name the same directory; write the "
                              "continued assistant to a new directory")
        hyperparameters["assistant"] = str(assistant)
    overrides = {name: value for name, value in (
        ("epochs", epochs), ("lr", lr), ("batch_size", batch_size), ("grad_accum", grad_accum),
        ("seed", seed), ("checkpoint_every", checkpoint_every), ("max_steps", max_steps),
    ) if value is not None}
    settings = dict(
        method=method_cls.name, data=data, forget=forget, retain=retain,
        forget_documents=forget_documents, retain_documents=retain_documents, people=people,
        data_seed=data_seed, max_length=max_length, hyperparameters=hyperparameters,
        device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
        **{key: value for key, value in overrides.items() if key != "seed"},
    )
    if seeds != 1:
        unlearn_seeds(
            lambda one_seed, directory: uldkit.unlearn(
                model, out=directory, seed=one_seed, resume=resume, overwrite=overwrite,
                **settings),
            {"model": str(model), "out": str(out), **settings}, out, seed, seeds,
            resume=resume)
        return
    result = uldkit.unlearn(model, out=out, seed=seed, resume=resume, overwrite=overwrite,
                            **settings)
    if not PartialState().is_main_process:
        return
    Console().print(
        f"[bold green]done[/] {result.method} -> {result.out}: {result.steps} steps in "
        f"{result.train_seconds:.1f}s, final loss {result.final_loss:.4f}",
        highlight=False, soft_wrap=True,
    )


def unlearn_seeds(run_one: Callable[[int, Path], Any], record: dict[str, Any], out: Path,
                  first: int, count: int, *, resume: bool) -> None:
    """`--seeds N`: `run_one(seed, OUT/seed-<s>)` for seeds first, first + 1, ... (a seed
    already finished is kept when resuming), then OUT/seeds.json: each figure's mean and
    spread over them."""
    from accelerate import PartialState

    from uldkit.report.seeds import run_over_seeds, seed_dir, seed_list
    from uldkit.training.run_dir import RunDir, write_run_config

    seeds = seed_list(first, count)
    main_process = PartialState().is_main_process
    console = Console()

    def one_seed(seed: int, directory: Path) -> dict[str, Any]:
        summary = RunDir(directory).summary("unlearn")
        if not (resume and summary.is_file()):
            run_one(seed, directory)
        return {key: value for key, value in json.loads(summary.read_text()).items()
                if key in ("steps", "train_seconds", "final_loss")}

    combined = run_over_seeds(one_seed, seeds, out,
                              log=lambda line: console.print(line, highlight=False,
                                                             soft_wrap=True))
    if not main_process:
        return
    write_run_config(out, "unlearn --seeds", {**record, "seeds": count, "seed": first})
    combined["runs"] = [str(seed_dir(out, seed)) for seed in seeds]
    atomic_write_json(RunDir(out).summary("seeds"), combined)
    spread = combined["over_seeds"]["figures"]["train_seconds"]
    console.print(f"[bold green]done[/] {record['method']} -> {seed_dir(out, seeds[0])}"
                  f"..{seed_dir(out, seeds[-1]).name}: "
                  f"{spread['mean']:.1f}s mean training time (min {spread['min']:.1f}, "
                  f"max {spread['max']:.1f}); figures over seeds in "
                  f"{RunDir(out).summary('seeds')}", highlight=False, soft_wrap=True)
