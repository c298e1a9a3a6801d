"""`uldkit demo`: the whole story on the synthetic world, end to end, in minutes on a CPU.

Fine-tune a target (everything) and a retain model (everything but the forget people),
unlearn the forget people with each method, evaluate every model against the retain model,
audit it with membership inference, and write `results.json`, a report and a summary table.

- benchmark "tofu" (default): QA data; TOFU's metrics (plus exact memorisation, extraction
  strength and fluency of the forget answers), the MIA audit on the forget answers against
  held-out people's answers, and the relearning attack on every unlearned model.
- benchmark "muse": document data (`uldkit.demo_muse`).

Every stage resumes: a stage whose outputs are complete is skipped when the demo is run
again on the same DIR. `target`/`retain` use existing model directories instead of
fine-tuning them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from uldkit.data.sources import DataSource
from uldkit.demo_stages import (
    LazyModel,
    finetune_stage,
    given_model,
    mia_stage,
    qa_mia_texts,
    recorded_setting,
    relearn_stage,
    train_seconds,
    unlearn_stage,
)
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json
from uldkit.runinfo import write_run_config
from uldkit.training import TrainConfig

DEFAULT_METHODS = ("uld", "grad_diff", "npo")
BENCHMARKS = ("tofu", "muse")
# People in the world and held-out people (MIA non-members) when not given, per benchmark:
# MUSE needs more forget passages (forget10 of 100 = 10 biographies) than TOFU needs people.
DEFAULT_PEOPLE = {"tofu": 40, "muse": 100}
DEFAULT_HOLDOUT = {"tofu": 10, "muse": 40}
# The relearning attack: 10% of the forget answers, 20 LoRA steps (RelearnConfig defaults).
RELEARN_SETTINGS: dict[str, Any] = {"fraction": 0.1, "steps": 20, "lora_rank": 8,
                                    "batch_size": 4}

# Per-size training of target and retain models (measured to reach memorisation).
FINETUNE_SETTINGS = {
    "tiny": dict(epochs=30, lr=3e-3, batch_size=16),
    "small": dict(epochs=30, lr=2e-3, batch_size=16),
}
# Demo-scale unlearning settings. The papers' defaults (e.g. lr 1e-5 for GradDiff and NPO,
# lr 1e-3 for ULD's LoRA) are made for 7B models and barely move a tiny model trained from
# scratch; these are the settings the method tests (tests/test_methods_unlearn.py) found to
# unlearn the tiny target. Offset unlearning's small model is the target itself here: the
# demo has no smaller model sharing the tokenizer, and the paper's smaller model only
# changes cost, not the combination.
_SMALL_STEPS = {"batch_size": 4, "warmup_ratio": 0.0}
UNLEARN_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "uld": {"train": {"lr": 1e-2, "epochs": 20},
            "params": {"assistant_layers": 2, "uniform_weight": 1.0, "alpha": 1.0}},
    "grad_ascent": {"train": {"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}},
    # grad_diff, npo and npo+grad_diff keep the default warm-up: the README's demo table.
    # Without it (as in the method tests), NPO's forget loss takes the tiny model's utility.
    "grad_diff": {"train": {"lr": 5e-4, "epochs": 4, "batch_size": 4}},
    "kl": {"train": {"lr": 5e-4, "epochs": 4, **_SMALL_STEPS}},
    "npo": {"train": {"lr": 1e-3, "epochs": 5, "batch_size": 4}},
    "npo+grad_diff": {"train": {"lr": 1e-3, "epochs": 10, "batch_size": 4}},
    "npo+kl": {"train": {"lr": 1e-3, "epochs": 10, **_SMALL_STEPS}},
    "simnpo": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "dpo": {"train": {"lr": 1e-3, "epochs": 5, **_SMALL_STEPS}},
    "idk_dpo": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "idk": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "undial": {"train": {"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}},
    "rmu": {"train": {"lr": 1e-2, "epochs": 10, **_SMALL_STEPS},
            "params": {"layer": 2, "alpha": 100}},
    "offset": {"train": {"lr": 5e-4, "epochs": 4, **_SMALL_STEPS},
               "params": {"small_model": "{target}", "loss": "grad_diff"}},
}


def unlearn_settings(method: str, target_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training overrides) the demo uses for `method`."""
    settings = UNLEARN_SETTINGS.get(method, {})
    params = {key: value.format(target=target_dir) if isinstance(value, str) else value
              for key, value in settings.get("params", {}).items()}
    return params, dict(settings.get("train", {}))


@dataclass
class DemoConfig:
    out: str
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    benchmark: str = "tofu"
    size: str = "tiny"
    people: int | None = None  # default: DEFAULT_PEOPLE[benchmark], or the given target's
    holdout: int | None = None  # held-out people (MIA non-members); DEFAULT_HOLDOUT
    forget: str = "forget10"
    seed: int = 0
    samples_per_method: int = 5
    max_new_tokens: int = 48
    relearn: bool = True  # TOFU mode: the relearning attack on every unlearned model
    target: str | None = None  # an existing target model directory: no fine-tuning
    retain: str | None = None  # an existing retain model directory: no fine-tuning


def resolve_config(config: DemoConfig) -> DemoConfig:
    """A copy with people and holdout filled in, checked."""
    if config.benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark '{config.benchmark}'; choose "
                          f"{' or '.join(BENCHMARKS)}")
    if config.size not in FINETUNE_SETTINGS:
        raise ConfigError(f"unknown demo size '{config.size}'; choose {', '.join(FINETUNE_SETTINGS)}")
    if (config.target is None) != (config.retain is None):
        raise ConfigError("give both --target and --retain (existing models), or neither")
    people, holdout = config.people, config.holdout
    if config.target is not None:
        target = given_model(config.target, "target")
        given_model(config.retain, "retain")
        people = people or recorded_setting(target, "people")
        holdout = holdout or recorded_setting(target, "holdout_people") or None
    people = people or DEFAULT_PEOPLE[config.benchmark]
    holdout = holdout or DEFAULT_HOLDOUT[config.benchmark]
    if people < 10 or holdout < 1:
        raise ConfigError("the demo needs at least 10 people and 1 held-out person")
    return replace(config, people=int(people), holdout=int(holdout))


def demo_methods(config: DemoConfig) -> list[str]:
    from uldkit.methods.registry import all_methods

    known = all_methods()
    methods = list(known) if config.methods == ["all"] else list(config.methods)
    for name in methods:
        if name not in known:
            raise ConfigError(f"unknown method '{name}'; known methods: {', '.join(known)}")
    return methods


def run_demo(config: DemoConfig, log=print) -> dict[str, Any]:
    from uldkit.eval.report import render_report

    config = resolve_config(config)
    methods = demo_methods(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, "demo", asdict(config))
    started = time.perf_counter()
    if config.benchmark == "muse":
        from uldkit.demo_muse import run_muse_demo

        results = run_muse_demo(config, methods, out, log)
        title = "uldkit demo: unlearning passages of the synthetic world (MUSE)"
    else:
        results = _run_tofu_demo(config, methods, out, log)
        title = "uldkit demo: unlearning on the synthetic world"
    results["config"] = asdict(config)
    results["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(out / "results.json", results)
    render_report([out], out / "report", title=title)
    return results


def demo_models(config: DemoConfig, out: Path, log, target_settings: dict[str, Any],
                retain_settings: dict[str, Any],
                training: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """The target and retain model directories: given, or fine-tuned (resumably) with
    `training` (default FINETUNE_SETTINGS of the size)."""
    if config.target is not None:
        return given_model(config.target, "target"), given_model(config.retain, "retain")
    models = []
    for name, settings in (("target", target_settings), ("retain", retain_settings)):
        train = TrainConfig(seed=config.seed, description=f"fine-tuning {name}",
                            **(training or FINETUNE_SETTINGS[config.size]))
        models.append(finetune_stage(
            out / name, f"{name} model", log, train=train, size=config.size,
            people=config.people, holdout_people=config.holdout, **settings))
    return models[0], models[1]


def _run_tofu_demo(config: DemoConfig, methods: list[str], out: Path, log) -> dict[str, Any]:
    from uldkit.data.synthetic import generate_world
    from uldkit.eval.tofu_eval import evaluate_tofu
    from uldkit.eval.tofu_log import load_tofu_log

    source = DataSource("synthetic", people=config.people, seed=0)
    target_dir, retain_dir = demo_models(
        config, out, log, {"splits": ["full"]}, {"splits": [_retain_split(config.forget)]})
    retain_model = LazyModel(retain_dir)
    mia_texts = qa_mia_texts(generate_world(config.people, 0, config.holdout),
                             source.load(config.forget))

    def eval_stage(name: str, model: LazyModel, retain_log: Any) -> tuple[dict, dict]:
        eval_dir = out / "eval" / name
        summary_file = eval_dir / "summary.json"
        if summary_file.exists():
            figures = json.loads(summary_file.read_text())["figures"]
            if figures.get("forget_exact_memorisation") is not None:
                return load_tofu_log(eval_dir / "eval_log_aggregated.json"), figures
        log(f"[demo] evaluating {name}")
        tofu_log, summary = evaluate_tofu(
            model(), source, config.forget, retain_log=retain_log,
            max_new_tokens=config.max_new_tokens, out_dir=eval_dir, resume=True,
            model_name=name,
        )
        return tofu_log, summary.figures.to_dict()

    def row(name: str, model_dir: Path, seconds: float | None, retain_log: Any) -> dict:
        model = retain_model if model_dir == retain_dir else LazyModel(model_dir)
        tofu_log, figures = eval_stage(name, model, retain_log)
        result = _row(figures, seconds, tofu_log if name != "retain" else None, config)
        result["mia"] = mia_stage(out / "mia" / name / "mia_summary.json", model,
                                  retain_model, mia_texts)
        return result

    retain_log, _ = eval_stage("retain", retain_model, None)
    results: dict[str, Any] = {
        "benchmark": "tofu",
        "target": row("target", target_dir, train_seconds(target_dir), retain_log),
        "retain": row("retain", retain_dir, train_seconds(retain_dir), retain_log),
        "methods": {},
    }
    for name in methods:
        method_dir = out / "methods" / name
        params, train = unlearn_settings(name, target_dir.resolve())
        seconds = unlearn_stage(name, target_dir, method_dir, log, people=config.people,
                                forget=config.forget, hyperparameters=params,
                                train_overrides={"seed": config.seed, **train})
        results["methods"][name] = row(name, method_dir, seconds, retain_log)
        if config.relearn:
            results["methods"][name]["relearn"] = relearn_stage(
                name, method_dir, target_dir, out / "attacks" / name, log,
                people=config.people, forget=config.forget, seed=config.seed,
                max_new_tokens=config.max_new_tokens, **RELEARN_SETTINGS)
    return results


def _retain_split(forget_split: str) -> str:
    from uldkit.data.tofu import retain_split_for

    return retain_split_for(forget_split)


ROW_KEYS = (
    "forget_quality", "model_utility", "forget_rouge", "forget_prob", "ks_statistic",
    "forget_truth_ratio", "retain_prob", "retain_rouge", "retain_truth_ratio",
    "real_authors_prob", "real_authors_rouge", "real_authors_truth_ratio",
    "world_facts_prob", "world_facts_rouge", "world_facts_truth_ratio",
    "forget_exact_memorisation", "forget_extraction_strength", "forget_answer_fluency",
)


def _row(summary: dict, train_seconds: float | None, tofu_log: Any, config: DemoConfig) -> dict:
    row = {key: summary.get(key) for key in ROW_KEYS}
    row["train_seconds"] = train_seconds
    if tofu_log is not None:
        row["samples"] = _samples(tofu_log, config.samples_per_method)
    return row


def _samples(tofu_log: dict, count: int) -> list[dict[str, str]]:
    generated = tofu_log["eval_log_forget.json"]["generated_text"]
    rows = []
    for index in sorted(generated, key=int)[:count]:
        prompt, answer, truth = generated[index]
        question = prompt.split("Question:", 1)[-1].split("\nAnswer:", 1)[0].strip()
        rows.append({"question": question, "truth": truth, "generated": answer})
    return rows
