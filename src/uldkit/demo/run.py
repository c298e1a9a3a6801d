"""`uldkit demo`: the whole story on the synthetic world, end to end, in minutes on a CPU.

Fine-tune a target (everything) and a retain model (everything but the forget people),
unlearn the forget people with each method, evaluate every model against the retain model,
audit it with membership inference, and write `results.json`, a report and a summary table.

- benchmark "tofu" (default): QA data; TOFU's metrics (plus exact memorisation, extraction
  strength and fluency of the forget answers), the MIA audit on the forget answers against
  held-out people's answers, and the relearning and quantisation (8- and 4-bit weights, with
  optimum-quanto installed) attacks on every unlearned model.
- benchmark "muse": document data (`uldkit.demo.muse`).
- benchmark "tofu-real": the TOFU flow on the real TOFU files, a CPU-sized subset of its
  authors or (`full`) all of them (`uldkit.demo.tofu_real`).

Every stage resumes: a stage whose outputs are complete is skipped when the demo is run
again on the same DIR. `target`/`retain` use existing model directories instead of
fine-tuning them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from uldkit.data.sources import DataSource
from uldkit.demo.settings import (
    BENCHMARKS,
    DEFAULT_HOLDOUT,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PEOPLE,
    FINETUNE_SETTINGS,
    QUANTIZE_BITS,
    RELEARN_SETTINGS,
    DemoConfig,
    unlearn_settings,
)
from uldkit.demo.stages import (
    LazyModel,
    MiaTexts,
    demo_models,
    given_model,
    mia_stage,
    qa_mia_texts,
    quantize_stage,
    recorded_setting,
    relearn_stage,
    train_seconds,
    unlearn_stage,
)
from uldkit.errors import ConfigError
from uldkit.eval.tofu_log import FORGET_SET, GENERATED_TEXT
from uldkit.io import atomic_write_json
from uldkit.training.run_dir import RunDir, write_run_config


def resolve_config(config: DemoConfig) -> DemoConfig:
    """A copy with people and holdout filled in, checked."""
    if config.benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark '{config.benchmark}'; choose "
                          f"{' or '.join(BENCHMARKS)}")
    if config.size not in FINETUNE_SETTINGS:
        raise ConfigError(f"unknown demo size '{config.size}'; choose {', '.join(FINETUNE_SETTINGS)}")
    if (config.target is None) != (config.retain is None):
        raise ConfigError("give both --target and --retain (existing models), or neither")
    if config.max_new_tokens is None:
        config = replace(config, max_new_tokens=DEFAULT_MAX_NEW_TOKENS[config.benchmark])
    if config.benchmark == "tofu-real":
        return _resolve_tofu_real(config)
    if config.full or config.data or any(getattr(config, name) is not None for name in (
            "retain_authors", "forget_authors", "utility_rows", "finetune_epochs")):
        raise ConfigError("--full, --data and the author counts are for --benchmark tofu-real")
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


def _resolve_tofu_real(config: DemoConfig) -> DemoConfig:
    """tofu-real: the CPU subset's authors unless --full (every retain author, none held
    out); `people` becomes the number of authors trained on."""
    from uldkit.data.tofu import FORGET_SPLITS
    from uldkit.demo.tofu_real import (
        CPU_HOLDOUT_AUTHORS,
        CPU_RETAIN_AUTHORS,
        TOFU_AUTHORS,
        check_author_counts,
        tofu_root,
    )

    if config.forget not in FORGET_SPLITS:
        raise ConfigError(f"unknown forget split '{config.forget}'; choose "
                          f"{', '.join(FORGET_SPLITS)}")
    if config.full and (config.retain_authors is not None or config.forget_authors is not None
                        or config.utility_rows is not None or config.holdout):
        raise ConfigError("--full trains on all of TOFU: it takes no subset or held-out authors")
    for name in ("retain_authors", "forget_authors", "utility_rows"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")
    retain_authors = None if config.full else config.retain_authors or CPU_RETAIN_AUTHORS
    holdout = 0 if config.full else config.holdout or CPU_HOLDOUT_AUTHORS
    root = tofu_root(config.data)  # checked before the run directory is made
    check_author_counts(root, config.forget, retain_authors, holdout)
    forget_authors = config.forget_authors or {"forget01": 2, "forget05": 10,
                                               "forget10": 20}[config.forget]
    people = (TOFU_AUTHORS if retain_authors is None
              else min(forget_authors, TOFU_AUTHORS) + retain_authors)
    return replace(config, data=str(root), retain_authors=retain_authors, holdout=holdout,
                   people=people)


def demo_methods(config: DemoConfig) -> list[str]:
    from uldkit.unlearning.catalog import all_methods

    known = all_methods()
    methods = list(known) if config.methods == ["all"] else list(config.methods)
    for name in methods:
        if name not in known:
            raise ConfigError(f"unknown method '{name}'; known methods: {', '.join(known)}")
    return methods


def run_demo(config: DemoConfig, log=print) -> dict[str, Any]:
    from uldkit.report.render import render_report

    config = resolve_config(config)
    methods = demo_methods(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, "demo", asdict(config))
    started = time.perf_counter()
    if config.benchmark == "muse":
        from uldkit.demo.muse import run_muse_demo

        results = run_muse_demo(config, methods, out, log)
        title = "uldkit demo: unlearning passages of the synthetic world (MUSE)"
    elif config.benchmark == "tofu-real":
        results = _run_qa_demo(config, methods, out, log, tofu_real_inputs(config, out))
        title = "uldkit demo: unlearning on the real TOFU files"
    else:
        results = _run_qa_demo(config, methods, out, log, synthetic_inputs(config))
        title = "uldkit demo: unlearning on the synthetic world"
    results["config"] = asdict(config)
    results["wall_seconds"] = time.perf_counter() - started
    results_file = RunDir(out).summary("results")
    finished = finished_results(results_file, results)
    if finished is not None and RunDir(RunDir(out).report_dir).report("html").exists():
        return finished
    atomic_write_json(results_file, results)
    render_report([out], RunDir(out).report_dir, title=title)
    return results


def finished_results(path: Path, results: dict[str, Any]) -> dict[str, Any] | None:
    """The results a finished run already wrote, when a rerun found nothing to redo: the
    same figures but for `wall_seconds`, which would otherwise become the no-op rerun's time."""
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or "wall_seconds" not in previous:
        return None
    return previous if _figures(previous) == _figures(results) else None


def _figures(results: dict[str, Any]) -> str:
    # Compared as JSON text: tuples read back as lists, and NaN equals itself there.
    return json.dumps({k: v for k, v in results.items() if k != "wall_seconds"},
                      sort_keys=True)


@dataclass(frozen=True)
class QaDemoInputs:
    """Where the QA flow's data comes from and how its stages are set for that data."""

    source: DataSource
    mia_texts: MiaTexts | None  # None: no non-members, no MIA audit
    target_settings: dict[str, Any]  # FinetuneConfig settings of the target
    retain_settings: dict[str, Any]  # ... and of the retain model
    data_settings: dict[str, Any]  # UnlearnConfig / RelearnConfig data settings
    unlearn_settings: Callable[[str, Path], tuple[dict[str, Any], dict[str, Any]]]
    training: dict[str, Any] | None = None  # fine-tuning; None: FINETUNE_SETTINGS[size]


def synthetic_inputs(config: DemoConfig) -> QaDemoInputs:
    from uldkit.data.synthetic import generate_world

    source = DataSource("synthetic", people=config.people, seed=0)
    return QaDemoInputs(
        source=source,
        mia_texts=qa_mia_texts(generate_world(config.people, 0, config.holdout),
                               source.load(config.forget)),
        target_settings={"splits": ["full"]},
        retain_settings={"splits": [_retain_split(config.forget)]},
        data_settings={"people": config.people},
        unlearn_settings=unlearn_settings,
    )


def tofu_real_inputs(config: DemoConfig, out: Path) -> QaDemoInputs:
    from uldkit.demo.tofu_real import (
        MAX_LENGTH,
        TOFU_REAL_FINETUNE_SETTINGS,
        prepare_tofu_real,
        tofu_real_unlearn_settings,
        tofu_root,
    )

    prepared = prepare_tofu_real(
        tofu_root(config.data), out, config.forget, config.retain_authors, config.holdout or 0,
        forget_authors=config.forget_authors, utility_rows=config.utility_rows)
    data = str(prepared.source.location)
    retain_split = _retain_split(config.forget)
    forget_pairs = len(prepared.source.load(config.forget))
    training = dict(TOFU_REAL_FINETUNE_SETTINGS[config.size])
    if config.finetune_epochs is not None:
        training["epochs"] = config.finetune_epochs
    return QaDemoInputs(
        source=prepared.source,
        mia_texts=prepared.mia_texts,
        target_settings={"data": data, "splits": [config.forget, retain_split],
                         "max_length": MAX_LENGTH},
        retain_settings={"data": data, "splits": [retain_split], "max_length": MAX_LENGTH},
        data_settings={"data": data, "max_length": MAX_LENGTH},
        unlearn_settings=lambda method, target: tofu_real_unlearn_settings(
            method, target, forget_pairs),
        training=training,
    )


def _run_qa_demo(config: DemoConfig, methods: list[str], out: Path, log,
                 inputs: QaDemoInputs) -> dict[str, Any]:
    from uldkit.eval.tofu_eval import evaluate_tofu
    from uldkit.eval.tofu_log import load_tofu_log

    source = inputs.source
    target_dir, retain_dir = demo_models(config, out, log, inputs.target_settings,
                                         inputs.retain_settings, inputs.training)
    retain_model = LazyModel(retain_dir)

    def eval_stage(name: str, model: LazyModel, retain_log: Any) -> tuple[dict, dict]:
        eval_dir = out / "eval" / name
        summary_file = RunDir(eval_dir).summary("eval")
        if summary_file.exists():
            figures = json.loads(summary_file.read_text())["figures"]
            fluency = figures.get("forget_answer_fluency") or {}
            if figures.get("forget_exact_memorisation") is not None and "perplexity" in fluency:
                return load_tofu_log(RunDir(eval_dir).tofu_log), figures
        log(f"[demo] evaluating {name}")
        tofu_log, summary = evaluate_tofu(
            model(), source, config.forget, retain_log=retain_log,
            max_new_tokens=config.max_new_tokens, out_dir=eval_dir, resume=True,
            model_name=name, reference=retain_model(), reference_name="retain",
        )
        return tofu_log, summary.figures.to_dict()

    def row(name: str, model_dir: Path, seconds: float | None, retain_log: Any) -> dict:
        model = retain_model if model_dir == retain_dir else LazyModel(model_dir)
        tofu_log, figures = eval_stage(name, model, retain_log)
        result = _row(figures, seconds, tofu_log if name != "retain" else None, config)
        if inputs.mia_texts is not None:
            result["mia"] = mia_stage(RunDir(out / "mia" / name).summary("mia"), model,
                                      retain_model, inputs.mia_texts)
        return result

    retain_log, _ = eval_stage("retain", retain_model, None)
    results: dict[str, Any] = {
        "benchmark": config.benchmark,
        "target": row("target", target_dir, train_seconds(target_dir), retain_log),
        "retain": row("retain", retain_dir, train_seconds(retain_dir), retain_log),
        "methods": {},
    }
    for name in methods:
        method_dir = out / "methods" / name
        params, train = inputs.unlearn_settings(name, target_dir.resolve())
        seconds = unlearn_stage(name, target_dir, method_dir, log, forget=config.forget,
                                hyperparameters=params,
                                train_overrides={"seed": config.seed, **train},
                                **inputs.data_settings)
        results["methods"][name] = row(name, method_dir, seconds, retain_log)
        if config.relearn:
            results["methods"][name]["relearn"] = relearn_stage(
                name, method_dir, target_dir, out / "attacks" / name, log,
                forget=config.forget, seed=config.seed,
                max_new_tokens=config.max_new_tokens, **RELEARN_SETTINGS,
                **inputs.data_settings)
        if config.quantize and _quanto_installed(name, log):
            results["methods"][name]["quantize"] = {
                str(bits): quantize_stage(
                    name, method_dir, target_dir, out / "attacks" / f"{name}_{bits}bit", log,
                    bits=bits, forget=config.forget, max_new_tokens=config.max_new_tokens,
                    **inputs.data_settings)
                for bits in QUANTIZE_BITS}
    return results


def _quanto_installed(method: str, log) -> bool:
    from uldkit.errors import BY_NAME, installed_version

    if installed_version("optimum-quanto") is not None:
        return True
    log(f"[demo] no quantisation attack on {method}: {BY_NAME['quantize'].install}")
    return False


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
    generated = tofu_log[FORGET_SET][GENERATED_TEXT]
    rows = []
    for index in sorted(generated, key=int)[:count]:
        prompt, answer, truth = generated[index]
        question = prompt.split("Question:", 1)[-1].split("\nAnswer:", 1)[0].strip()
        rows.append({"question": question, "truth": truth, "generated": answer})
    return rows
