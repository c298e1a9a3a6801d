"""TOFU evaluation speed: `evaluate_tofu` with shared-prefix scoring (each prompt run once;
generation resumed where the loss pass shows the model's greedy answer departs from the
true one) against whole-sequence scoring and generation from the prompt (the way it ran
before issue 16), side by side in one run on the same model, on one thread and on all
cores; with where the time goes (scoring, generation, ROUGE, rest).

The two ways alternate within each repeat and the medians are compared; their losses are
checked against each other. `--loop` adds the old baseline: one sample at a time.

    python benchmarks/eval_speed.py                       # trains a tiny model first
    python benchmarks/eval_speed.py --model DIR --people 20 --split forget10 --threads 1 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from rouge_score import rouge_scorer

import uldkit.eval.tofu_eval as tofu_eval
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


class Stopwatch:
    """Seconds spent inside some functions of `uldkit.eval.tofu_eval`, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
        return timed


def timed_eval(lm, source, args, shared_prefix: bool) -> tuple[float, dict, dict[str, float]]:
    watch = Stopwatch()
    originals = {"answer_scores": tofu_eval.answer_scores,
                 "greedy_answers": tofu_eval.greedy_answers}
    score = rouge_scorer.RougeScorer.score
    tofu_eval.answer_scores = watch.wrap("scoring", originals["answer_scores"])
    tofu_eval.greedy_answers = watch.wrap("generation", originals["greedy_answers"])
    rouge_scorer.RougeScorer.score = watch.wrap("rouge", score)
    try:
        started = time.perf_counter()
        log, _ = evaluate_tofu(lm, source, args.split, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens, show_progress=False,
                               shared_prefix=shared_prefix)
        seconds = time.perf_counter() - started
    finally:
        tofu_eval.answer_scores = originals["answer_scores"]
        tofu_eval.greedy_answers = originals["greedy_answers"]
        rouge_scorer.RougeScorer.score = score
    parts = dict(watch.seconds)
    parts["rest"] = seconds - sum(parts.values())
    return seconds, log, parts


def one_at_a_time(lm, sets, max_new_tokens: int | None) -> None:
    """The same per-sample work as `evaluate_tofu`, without any batching."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for key, data in sets.items():
        for pair in data:
            paraphrase = pair.answer if key in ANSWER_AS_PARAPHRASE_SETS else pair.paraphrased_answer
            for answer in (pair.answer, paraphrase, *pair.perturbed_answers):
                answer_losses(lm, [pair.question], [answer], batch_size=1, shared_prefix=False)
            prompt = encode_prompt(lm.tokenizer, pair.question)
            cap = max_new_tokens or max(1, TOFU_GENERATION_MAX_LENGTH - len(prompt))
            ids = generate_ids(lm, [prompt], GenerationSettings(max_new_tokens=cap))[0]
            scorer.score(pair.answer, lm.tokenizer.decode(ids, skip_special_tokens=True).strip())


def largest_loss_difference(left: dict, right: dict) -> float:
    worst = 0.0
    for key, set_log in left.items():
        for field in ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss"):
            a = np.asarray([set_log[field][i] for i in sorted(set_log[field], key=int)])
            b = np.asarray([right[key][field][i] for i in sorted(set_log[field], key=int)])
            worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def differing_texts(left: dict, right: dict) -> int:
    return sum(text != right[key]["generated_text"][i]
               for key, set_log in left.items()
               for i, text in set_log["generated_text"].items())


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                        help="Thread counts to measure (0: all cores).")
    parser.add_argument("--loop", action="store_true", help="Also time one sample at a time.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or train_tiny(Path(scratch) / "tiny", args.people, args.epochs)
        lm = load_language_model(model_dir, device="cpu")
        source = DataSource(args.data, people=args.people)
        sets = tofu_eval_sets(source, args.split)
        samples = sum(len(data) for data in sets.values())
        model_label = args.model or f"tiny, trained here for {args.epochs} epochs"
        print(f"model {model_label}, data {args.data} ({args.split}), {samples} samples, "
              f"batch size {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
              f"median of {args.repeats}")
        for threads in args.threads:
            count = threads or os.cpu_count() or 1
            torch.set_num_threads(count)
            runs: dict[str, list] = {"whole sequences (before)": [], "shared prefix (after)": []}
            for _ in range(args.repeats):
                for name, shared in zip(runs, (False, True)):
                    runs[name].append(timed_eval(lm, source, args, shared))
            before, after = (statistics.median(r[0] for r in runs[n]) for n in runs)
            print(f"\n{count} thread(s)")
            for name, results in runs.items():
                seconds = statistics.median(r[0] for r in results)
                parts = {part: statistics.median(r[2].get(part, 0.0) for r in results)
                         for part in ("scoring", "generation", "rouge", "rest")}
                shares = ", ".join(f"{part} {value:.2f} s ({value / seconds:.0%})"
                                   for part, value in parts.items())
                print(f"  {name:26s} {seconds:7.2f} s  {samples / seconds:7.1f} samples/s"
                      f"  [{shares}]")
            print(f"  speed-up                   {before / after:7.2f} x")
            first = {name: results[0][1] for name, results in runs.items()}
            print("  largest |loss difference| shared vs whole: "
                  f"{largest_loss_difference(*first.values()):.2e}; generated texts that "
                  f"differ: {differing_texts(*first.values())}")
            if args.loop:
                started = time.perf_counter()
                one_at_a_time(lm, sets, args.max_new_tokens)
                looped = time.perf_counter() - started
                print(f"  one at a time              {looped:7.2f} s  (one run)")


if __name__ == "__main__":
    main()
