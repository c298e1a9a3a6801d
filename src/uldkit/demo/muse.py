"""`uldkit demo --benchmark muse`: unlearning passages (MUSE's setting) on the synthetic world.

Corpus: each person's biography is one passage. The target learns every biography, the
forget people's QA pairs and TOFU's 40-pair sample of the retain QA (the KnowMem sets), and
the general facts; the retain model the same without the forget people (their biographies
and QA). Held-out people are in the tokenizer but in no training set: PrivLeak's and the
MIA audit's non-members.

Unlearning takes the forget *passages* as the forget set (every token of each biography
scored; no QA pair) and the retain passages as the retain side. Methods that need a
question per forget item to answer with a refusal (dpo, idk_dpo, idk) cannot take passages:
they are skipped and listed under "skipped". Every model is evaluated with MUSE
(`uldkit.eval.muse`) against the retain model and the target, and audited with membership
inference on forget vs held-out biographies.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from uldkit.data.documents import DocumentSplits, document_texts, synthetic_document_splits
from uldkit.data.synthetic import generate_world
from uldkit.data.tofu import retain_split_for
from uldkit.demo.settings import UNLEARN_SETTINGS, MethodSettings, checked_training
from uldkit.demo.stages import (
    LazyModel,
    MiaTexts,
    demo_models,
    mia_stage,
    train_seconds,
    unlearn_stage,
)
from uldkit.errors import ConfigError
from uldkit.eval.muse import MuseSettings
from uldkit.io import atomic_write_json, atomic_write_text
from uldkit.training.run_dir import RunDir

# uldkit's KnowMem: the demo's models learned uldkit's QA format (MUSE's "Answer: " prompt leaves
# a lone space token before the answer for them).
SETTINGS = MuseSettings(batch_size=16, knowmem="uldkit")
# Fine-tuning per size: the target must reproduce its passages and answers (VerbMem and
# KnowMem near 1), the retain model must know its own as well.
MUSE_FINETUNE_SETTINGS = {
    "tiny": checked_training(dict(epochs=30, lr=3e-3, batch_size=16)),
    "small": checked_training(dict(epochs=30, lr=2e-3, batch_size=16)),
}
_PASSAGE_STEPS = {"batch_size": 4, "grad_accum": 1, "warmup_ratio": 0.0}
# Demo-scale unlearning of passages (see demo.UNLEARN_SETTINGS for why not the papers'): the
# forget set is 10 passages of ~100 tokens, 3 steps an epoch at batch 4. Measured on the
# default world (tiny target and retain of MUSE_FINETUNE_SETTINGS; VerbMem / KnowMem on D_f /
# utility preserved; the retain model: 0.53 / 0.18 / 1.03):
#   uld (alpha 2, uniform weight 5, 60 steps): 0.08 / 0.64 / 0.87 (alpha 1, weight 1:
#     0.20 / 0.85 / 1.00: the assistant learns the passages' wording, not the QA form);
#   grad_diff (lr 5e-4, 24 steps): 0.33 / 0.69 / 0.97 (18 steps: 0.59 / 0.91 / 0.99; 30
#     steps: 0.19 / 0.41 / 0.92);
#   npo (lr 1e-3, 18 steps): 0.11 / 0.40 / 0.83 (30 steps: 0.07 / 0.10 / 0.42).
# The other methods use their TOFU demo settings one step per batch, not tuned on passages.
_TUNED_ON_PASSAGES = (
    MethodSettings("uld", train={"lr": 1e-2, "epochs": 20, **_PASSAGE_STEPS},
                   params={"assistant_layers": 2, "uniform_weight": 5.0, "alpha": 2.0}),
    MethodSettings("grad_diff", train={"lr": 5e-4, "epochs": 8, **_PASSAGE_STEPS}),
    MethodSettings("npo", train={"lr": 1e-3, "epochs": 6, **_PASSAGE_STEPS}),
)
MUSE_UNLEARN_SETTINGS: dict[str, MethodSettings] = {
    **{method: replace(settings, train={**settings.train, **_PASSAGE_STEPS})
       for method, settings in UNLEARN_SETTINGS.items()},
    **{settings.method: settings for settings in _TUNED_ON_PASSAGES},
}


def muse_unlearn_settings(method: str, target_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training overrides) the MUSE demo uses for `method`."""
    settings = MUSE_UNLEARN_SETTINGS.get(method) or MethodSettings(method, {})
    return settings.resolved(target_dir)


def cannot_take_passages(method: str) -> str | None:
    """Why `method` cannot unlearn a document forget set, or None."""
    from uldkit.unlearning.catalog import get_method

    if get_method(method).needs_refusals:
        return "answers each forget question with a refusal; passages have no question"
    return None


def run_muse_demo(config, methods: list[str], out: Path, log) -> dict[str, Any]:
    skipped = {name: reason for name in methods if (reason := cannot_take_passages(name))}
    runnable = [name for name in methods if name not in skipped]
    if not runnable:
        raise ConfigError(f"none of the methods ({', '.join(methods)}) can unlearn passages")
    for name, reason in skipped.items():
        log(f"[demo] skipping {name}: it {reason}")
    retain_split = retain_split_for(config.forget)
    forget_docs, retain_docs = f"synthetic:{config.forget}", f"synthetic:{retain_split}"
    target_dir, retain_dir = demo_models(
        config, out, log,
        {"splits": [config.forget, "retain_perturbed"], "documents": "synthetic:full"},
        {"splits": ["retain_perturbed"], "documents": retain_docs},
        MUSE_FINETUNE_SETTINGS[config.size],
    )
    data = synthetic_document_splits(generate_world(config.people, 0, config.holdout),
                                     config.forget)
    texts = MiaTexts(
        forget=document_texts(data.forget), holdout=document_texts(data.holdout),
        description=(f"the {len(data.forget)} forget biographies vs {len(data.holdout)} "
                     "held-out people's biographies"),
    )
    target_model, retain_model = LazyModel(target_dir), LazyModel(retain_dir)

    def row(name: str, model: LazyModel, seconds: float | None) -> dict[str, Any]:
        summary, samples = muse_stage(out / "eval" / name, name, model, retain_model,
                                      target_model, data, log)
        result: dict[str, Any] = {"muse": summary, "train_seconds": seconds}
        if name != "retain":
            result["samples"] = samples[:config.samples_per_method]
        result["mia"] = mia_stage(RunDir(out / "mia" / name).summary("mia"), model,
                                  retain_model, texts)
        return result

    results: dict[str, Any] = {
        "benchmark": "muse",
        "target": row("target", target_model, train_seconds(target_dir)),
        "retain": row("retain", retain_model, train_seconds(retain_dir)),
        "methods": {},
        "skipped": skipped,
    }
    for name in runnable:
        method_dir = out / "methods" / name
        params, train = muse_unlearn_settings(name, target_dir.resolve())
        seconds = unlearn_stage(
            name, target_dir, method_dir, log, people=config.people, forget=config.forget,
            forget_documents=forget_docs, retain_documents=retain_docs,
            hyperparameters=params, train_overrides={"seed": config.seed, **train})
        results["methods"][name] = row(name, LazyModel(method_dir), seconds)
    return results


def muse_stage(
    eval_dir: Path, name: str, model: LazyModel, retain: LazyModel, target: LazyModel,
    data: DocumentSplits, log,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """MUSE's summary of one model and its answers to forget questions (resumable)."""
    from uldkit.eval.muse import evaluate_muse

    summary_file, samples_file = RunDir(eval_dir).summary("muse"), RunDir(eval_dir).samples("muse")
    if summary_file.exists() and samples_file.exists():
        records = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
        return json.loads(summary_file.read_text()), _answer_samples(records)
    log(f"[demo] evaluating {name} (MUSE)")
    result = evaluate_muse(model(), data, retain(), target(), SETTINGS)
    atomic_write_text(samples_file, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in result.samples))
    summary = result.summary.to_dict()
    atomic_write_json(summary_file, summary)
    return summary, _answer_samples(result.samples)


def _answer_samples(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"question": r["question"], "truth": r["answer"], "generated": r["generated"]}
            for r in records if r.get("metric") == "knowmem_forget"]
