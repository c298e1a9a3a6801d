"""TOFU evaluation speed: `evaluate_tofu` against a one-sample-at-a-time loop doing the same work.

The loop scores each (question, answer) pair alone (batch size 1) and generates each answer
alone, with the same per-sample generation caps. Both are timed `--repeats` times and the
medians compared; the loop's losses are also checked against the batched ones.

    python benchmarks/eval_speed.py                       # trains a tiny model first
    python benchmarks/eval_speed.py --model DIR --people 20 --split forget10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rouge_score import rouge_scorer

from uldkit.data.formatting import encode_prompt
from uldkit.data.sources import DataSource
from uldkit.eval.tofu_eval import (
    ANSWER_AS_PARAPHRASE_SETS,
    TOFU_GENERATION_MAX_LENGTH,
    evaluate_tofu,
    tofu_eval_sets,
)
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.scoring import answer_losses
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig
from uldkit.unlearning.load import load_language_model


def one_at_a_time(lm, sets, max_new_tokens: int | None) -> dict[str, list[float]]:
    """The same per-sample work as `evaluate_tofu`, without any batching; gt losses per set."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    gt_losses: dict[str, list[float]] = {}
    for key, data in sets.items():
        gt_losses[key] = []
        for pair in data:
            paraphrase = pair.answer if key in ANSWER_AS_PARAPHRASE_SETS else pair.paraphrased_answer
            losses = [
                float(answer_losses(lm, [pair.question], [answer], batch_size=1)[0])
                for answer in (pair.answer, paraphrase, *pair.perturbed_answers)
            ]
            gt_losses[key].append(losses[0])
            prompt = encode_prompt(lm.tokenizer, pair.question)
            cap = max_new_tokens or max(1, TOFU_GENERATION_MAX_LENGTH - len(prompt))
            ids = generate_ids(lm, [prompt], GenerationSettings(max_new_tokens=cap))[0]
            generated = lm.tokenizer.decode(ids, skip_special_tokens=True).strip()
            scorer.score(pair.answer, generated)
    return gt_losses


def train_tiny(out: Path, people: int, epochs: int) -> Path:
    finetune(FinetuneConfig(
        out=str(out), splits=["full"], people=people, size="tiny", vocab_size=768,
        train=TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, warmup_ratio=0.05,
                          show_progress=False),
    ))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Model directory (default: train a tiny one).")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--split", default="forget10")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=25, help="Training the tiny model.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or train_tiny(Path(scratch) / "tiny", args.people, args.epochs)
        lm = load_language_model(model_dir, device="cpu")
        source = DataSource(args.data, people=args.people)
        sets = tofu_eval_sets(source, args.split)
        samples = sum(len(data) for data in sets.values())

        batched, looped = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            log, _ = evaluate_tofu(lm, source, args.split, batch_size=args.batch_size,
                                   max_new_tokens=args.max_new_tokens, show_progress=False)
            batched.append(time.perf_counter() - started)
            started = time.perf_counter()
            loop_losses = one_at_a_time(lm, sets, args.max_new_tokens)
            looped.append(time.perf_counter() - started)

    worst = max(
        float(np.max(np.abs(np.asarray(loop_losses[key]) - np.asarray(
            [log[key]["avg_gt_loss"][str(i)] for i in range(len(sets[key]))])))) for key in sets
    )
    batched_s, looped_s = statistics.median(batched), statistics.median(looped)
    model_label = args.model or f"tiny, trained here for {args.epochs} epochs"
    print(f"model {model_label}, data {args.data} ({args.split}), {samples} samples, "
          f"batch size {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"evaluate_tofu      {batched_s:8.2f} s  {samples / batched_s:8.1f} samples/s")
    print(f"one at a time      {looped_s:8.2f} s  {samples / looped_s:8.1f} samples/s")
    print(f"speed-up           {looped_s / batched_s:8.2f} x")
    print(f"largest |gt loss difference| batched vs one at a time: {worst:.2e}")


if __name__ == "__main__":
    main()
