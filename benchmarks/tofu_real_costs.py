"""What each stage of `uldkit demo --benchmark tofu-real` costs, in CPU seconds (not a test).

    OMP_NUM_THREADS=1 python benchmarks/tofu_real_costs.py --out /tmp/tofu_real_costs

Each stage runs a few units on the real TOFU files (ULDKIT_TOFU_DIR or --data), timed by
the process's CPU time, so that a busy shared machine inflates the figures less than wall
time would; the per-unit costs are then multiplied out to a whole demo run of the CPU subset
and of full TOFU. Units: an optimizer step (fine-tuning at batch 16; each method at its demo
batch), an evaluated question (TOFU's four sets: probabilities, perturbed answers, greedy
answer under TOFU's 200-token cap), an audited MIA text. Fine-tuning runs few steps, so the
evaluated model's greedy answers are short (it has not learned TOFU's long answers): the
evaluation figure is a lower bound; a trained model's answers run ~65 tokens (see the README
for the measured evaluation of trained models). Two idle cores give at best half the CPU
seconds as wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def cpu_seconds(run) -> tuple[float, object]:
    start = time.process_time()
    result = run()
    return time.process_time() - start, result


def main() -> None:
    from uldkit.demo.tofu_real import (
        MAX_LENGTH,
        prepare_tofu_real,
        tofu_real_unlearn_settings,
        tofu_root,
    )
    from uldkit.eval.mia import mia_audit
    from uldkit.eval.tofu_eval import evaluate_tofu
    from uldkit.training.finetune import FinetuneConfig, finetune
    from uldkit.training.trainer import TrainConfig
    from uldkit.unlearning.load import load_language_model
    from uldkit.unlearning.run import UnlearnConfig, unlearn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default=None, help="TOFU's folder")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per stage")
    parser.add_argument("--size", default="tiny")
    args = parser.parse_args()
    root = tofu_root(args.data)
    figures: dict[str, float] = {"torch_threads": torch.get_num_threads()}

    subset = prepare_tofu_real(root, args.out / "subset", "forget10", 20, 10)
    data = str(subset.source.location)
    target = args.out / "target"
    train = TrainConfig(epochs=1, max_steps=args.steps, batch_size=16, lr=3e-3,
                        show_progress=False)
    seconds, _ = cpu_seconds(lambda: finetune(FinetuneConfig(
        out=str(target), data=data, splits=["forget10", "retain90"], max_length=MAX_LENGTH,
        size=args.size, train=train), overwrite=True))
    figures["finetune_step"] = seconds / args.steps

    forget_pairs = len(subset.source.load("forget10"))
    for method in ("uld", "grad_diff", "npo"):
        params, overrides = tofu_real_unlearn_settings(method, target.resolve(), forget_pairs)
        overrides = {**overrides, "max_steps": args.steps, "show_progress": False}
        seconds, _ = cpu_seconds(lambda method=method, params=params, overrides=overrides:
                                 unlearn(UnlearnConfig(
                                     method=method, model=str(target),
                                     out=str(args.out / method), data=data,
                                     max_length=MAX_LENGTH, hyperparameters=params,
                                     train_overrides=overrides), overwrite=True))
        figures[f"{method}_step"] = seconds / args.steps

    sliced = prepare_tofu_real(root, args.out / "slice", "forget10", 1, 1, forget_authors=1,
                               utility_rows=10)
    questions = sum(len(sliced.source.load(s)) for s in (
        "forget10", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"))
    lm = load_language_model(target)
    seconds, _ = cpu_seconds(lambda: evaluate_tofu(lm, sliced.source, "forget10",
                                                   show_progress=False))
    figures["eval_question"] = seconds / questions
    texts = sliced.mia_texts
    seconds, _ = cpu_seconds(lambda: mia_audit(
        lm, texts.forget, texts.holdout, retain_lm=lm, forget_questions=texts.forget_questions,
        holdout_questions=texts.holdout_questions))
    figures["mia_text"] = seconds / (len(texts.forget) + len(texts.holdout))
    figures["projection"] = {name: project(figures, name, sizes)
                             for name, sizes in _RUNS.items()}
    print(json.dumps(figures, indent=2))
    (args.out / "costs.json").write_text(json.dumps(figures, indent=2))


# Units of a whole demo run (uld, grad_diff, npo; no relearning): fine-tuning examples at
# 30 epochs, steps per method, evaluated questions and MIA texts per model (five models).
_SUBSET_EVAL = 400 + 400 + 100 + 117
_RUNS = {
    "cpu_subset": {"target": 400 + 400 + 217, "retain": 400 + 217, "uld": 1263,
                   "grad_diff": 100, "npo": 100, "mia": 400 + 200},
    "full": {"target": 4000 + 217, "retain": 3600 + 217, "uld": 1263, "grad_diff": 100,
             "npo": 100, "mia": 0},
}


def project(costs: dict, run: str, sizes: dict[str, int]) -> dict[str, float]:
    steps = 30 * (math.ceil(sizes["target"] / 16) + math.ceil(sizes["retain"] / 16))
    stages = {
        "finetune": steps * costs["finetune_step"],
        **{m: sizes[m] * costs[f"{m}_step"] for m in ("uld", "grad_diff", "npo")},
        "eval": 5 * _SUBSET_EVAL * costs["eval_question"],
        "mia": 5 * sizes["mia"] * costs["mia_text"],
    }
    stages["total_cpu_seconds"] = sum(stages.values())
    return stages


if __name__ == "__main__":
    main()
