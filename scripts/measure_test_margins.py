"""Measure, over training seeds, the quantities that the model-quality tests assert.

The test fixtures train the tiny target/retain models (tests/conftest.py) and ULD
(tests/test_uld.py) with seed 0; another machine's floating point moves them as a new seed
would. This trains them with several seeds and prints the asserted quantities, so the
tests' thresholds can be set from the measured spread (see the comments beside them).

    PYTHONPATH=src python scripts/measure_test_margins.py --seeds 0 1 2 3 4 --out /tmp/margins

Per seed it also runs every unlearning case of tests/test_methods_unlearn.py (listed in
tests/unlearn_cases.py) on that seed's target, with that seed as the unlearning seed, and
records each method's forget ratio (forget10 answer probability after / before) and, for a
method with a retain term, its retain ratio (retain_perturbed); `--baselines-only` measures
only these (no retain model, TOFU or ULD), `--skip-cases` skips them.

It ends with every quantity's spread over the seeds measured (uldkit.report.seeds: mean,
sample std, min, max) and the bars the tests use: mean - K sd and mean + K sd (K = 4 by
default, `--sds`), so that the tests pass on a machine whose numerics move a figure as a new seed
would; a test's comment names the bar and the values it came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from uldkit.cli import main as cli_main
from uldkit.data.sources import DataSource
from uldkit.data.types import QADataset
from uldkit.eval.tofu_eval import evaluate_tofu
from uldkit.eval.tofu_log import FORGET_SET
from uldkit.eval.tofu_metrics import truth_ratios
from uldkit.methods.base import UnlearnContext, UnlearnData
from uldkit.models.loading import load_model
from uldkit.models.scoring import mean_answer_probability
from uldkit.report.seeds import combine_seeds, spreads
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig, Trainer
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.uld.method import ULD
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import resolve_train_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from unlearn_cases import CASES, LORA_CASE, offset_case, probabilities, run_case  # noqa: E402

PEOPLE = 20  # tests/conftest.py TEST_PEOPLE
ULD_SETTINGS = {"assistant_layers": 2, "uniform_weight": 1.0, "alpha": 1.0}  # tests/test_uld.py
ULD_TRAINING = {"epochs": 20, "lr": 1e-2, "show_progress": False}


def _finetune(out: Path, splits: list[str], seed: int) -> Path:
    if not (out / "train_summary.json").exists():
        finetune(FinetuneConfig(
            out=str(out), splits=splits, people=PEOPLE, size="tiny", vocab_size=768,
            train=TrainConfig(epochs=25, batch_size=16, lr=3e-3, warmup_ratio=0.05,
                              show_progress=False, seed=seed),
        ), overwrite=True)
    return out


def _person(source: DataSource, split: str, index: int) -> QADataset:
    pairs = [p for p in source.load(split) if p.subject == source.load(split)[index].subject]
    return QADataset(pairs, "person-a")


def _prob(lm, pairs) -> float:
    return mean_answer_probability(lm, [p.question for p in pairs], [p.answer for p in pairs])


def _uld(source: DataSource, target: Path, root: Path, seed: int) -> dict[str, float]:
    model, tokenizer = load_model(target)
    method = ULD(**ULD_SETTINGS)
    data = UnlearnData(forget=_person(source, "forget10", 0), retain=source.load("retain90"),
                       augmentation=source.augmentation("forget10"), max_length=128)
    plan = method.plan(model, tokenizer, data)
    config = resolve_train_config(ULD, {**ULD_TRAINING, "seed": seed})
    Trainer(plan.model, plan.objective, plan.data, config,
            pad_token_id=tokenizer.pad_token_id).train()
    first_out = root / "person-a"
    method.save(plan, tokenizer, first_out, UnlearnContext(str(target)))
    first = LogitDifferenceModel(plan.model, tokenizer, alpha=1.0)
    both = root / "both"
    cli_main(["unlearn", "--method", "uld", "--model", str(target), "--people", str(PEOPLE),
              "--forget", "forget01", "--assistant", str(first_out), "--out", str(both),
              "--epochs", "20", "--lr", "1e-2", "--seed", str(seed)])
    plain, uld = load_language_model(target), load_language_model(both)
    sets = {"forget": source.load("forget10"), "retain": source.load("retain_perturbed"),
            "general": source.load("world_facts_perturbed"),
            "person_a": _person(source, "forget10", 0), "person_b": source.load("forget01")}
    out = {}
    for name, pairs in sets.items():
        out[f"target_{name}"] = _prob(plain, pairs)
        out[f"uld_{name}"] = _prob(uld, pairs)
        if name in ("person_a", "person_b"):
            out[f"first_{name}"] = _prob(first, pairs)
    return out


def _tofu(source: DataSource, target: Path, retain: Path) -> dict[str, object]:
    retain_log, retain_summary = evaluate_tofu(load_language_model(retain), source, "forget10",
                                               show_progress=False)
    log, summary = evaluate_tofu(load_language_model(target), source, "forget10", retain_log,
                                 show_progress=False)
    target_r, retain_r = truth_ratios(log[FORGET_SET]), truth_ratios(retain_log[FORGET_SET])
    return {
        "forget_quality": summary.figures.forget_quality,
        "ks_statistic": summary.figures.ks_statistic,
        "target_forget_prob": summary.figures.forget_prob,
        "retain_forget_prob": retain_summary.figures.forget_prob,
        "target_forget_truth_ratio": summary.figures.forget_truth_ratio,
        "retain_forget_truth_ratio": retain_summary.figures.forget_truth_ratio,
        "target_mean_log_R": float(torch.tensor(target_r).log().mean()),
        "retain_mean_log_R": float(torch.tensor(retain_r).log().mean()),
        "target_forget_rouge": summary.figures.forget_rouge,
        "retain_forget_rouge": retain_summary.figures.forget_rouge,
        "target_retain_rouge": summary.figures.retain_rouge,
        "retain_retain_rouge": retain_summary.figures.retain_rouge,
    }


def _cases(source: DataSource, target: Path, root: Path, seed: int) -> dict[str, float]:
    """Every unlearning case's forget (and retain) ratio on this seed's target; each case's
    figures are kept in root/cases.json as they come, so an interrupted run resumes."""
    done_file = root / "cases.json"
    done = json.loads(done_file.read_text()) if done_file.exists() else {}
    forget_before, retain_before = probabilities(load_language_model(target), source)
    named = [(method, case) for method, *case in CASES]
    named += [("npo+grad_diff_lora", LORA_CASE[1:]), ("offset", offset_case(target)[1:])]
    for name, (hyperparameters, train, keeps_retain) in named:
        if f"{name}_forget_ratio" in done:
            continue
        method = "offset" if name == "offset" else name.removesuffix("_lora")
        out = root / "cases" / name.replace("+", "_")
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        run_case(target, PEOPLE, out, method, hyperparameters, train, seed=seed)
        forget, retain = probabilities(load_language_model(out), source)
        done[f"{name}_forget_ratio"] = forget / forget_before
        if keeps_retain:
            done[f"{name}_retain_ratio"] = retain / retain_before
        print(f"seed {seed} {name}: forget {forget_before:.3f} -> {forget:.3f}, retain "
              f"{retain_before:.3f} -> {retain:.3f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
        shutil.rmtree(out, ignore_errors=True)
        done_file.write_text(json.dumps(done, indent=1))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-uld", action="store_true")
    parser.add_argument("--skip-cases", action="store_true",
                        help="skip the unlearning cases of tests/test_methods_unlearn.py")
    parser.add_argument("--baselines-only", action="store_true",
                        help="only the unlearning cases: no retain model, TOFU or ULD")
    parser.add_argument("--sds", type=float, default=4.0,
                        help="bars at mean -/+ this many sample standard deviations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = DataSource("synthetic", people=PEOPLE)
    for seed in args.seeds:
        root = args.out / f"seed{seed}"
        result_file = root / ("cases_result.json" if args.baselines_only else "result.json")
        if result_file.exists():
            print(result_file.read_text(), flush=True)
            continue
        target = _finetune(root / "target", ["full"], seed)
        result: dict[str, object] = {"seed": seed}
        if not args.baselines_only:
            retain = _finetune(root / "retain", ["retain90"], seed)
            result.update(_tofu(source, target, retain))
            if not args.skip_uld:
                result.update(_uld(source, target, root / "uld", seed))
        if not args.skip_cases:
            result.update(_cases(source, target, root, seed))
        result_file.write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)
    results = [with_kept_shares(json.loads((args.out / f"seed{seed}" / result_file.name)
                                           .read_text())) for seed in args.seeds]
    print_bars(combine_seeds(results, args.seeds), args.sds)
    return None


def with_kept_shares(result: dict) -> dict:
    """The result with what tests/test_uld.py asserts: the share of the target's answer
    probability a ULD model keeps (uld_X / target_X, first_X / target_X)."""
    kept = {}
    for key, value in result.items():
        for model in ("uld", "first"):
            if key.startswith(f"{model}_") and f"target_{key[len(model) + 1:]}" in result:
                name = key[len(model) + 1:]
                kept[f"kept_{model}_{name}"] = value / result[f"target_{name}"]
    if "kept_uld_general" in kept:
        kept["general_over_forget"] = kept["kept_uld_general"] / kept["kept_uld_forget"]
    return {**result, **kept}


def print_bars(combined: dict, sds: float) -> None:
    """Each measured quantity over the seeds, and the bars at mean -/+ `sds` sample sd."""
    print(f"{'quantity':34} {'mean':>7} {'std':>7} {'min':>7} {'max':>7} "
          f"{'mean-' + format(sds, 'g') + 'sd':>9} {'mean+' + format(sds, 'g') + 'sd':>9}")
    for name, spread in spreads(combined).items():
        if name == "seed" or spread.std is None:
            continue
        print(f"{name:34} {spread.mean:7.3f} {spread.std:7.3f} {spread.low:7.3f} "
              f"{spread.high:7.3f} {spread.mean - sds * spread.std:9.3f} "
              f"{spread.mean + sds * spread.std:9.3f}")


if __name__ == "__main__":
    sys.exit(main())
