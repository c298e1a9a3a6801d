"""The relearning attack on a grad-ascent and a ULD model of the trained tiny target."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from uldkit.attacks.attack_lora import ATTACK_ADAPTER, with_attack_lora
from uldkit.attacks.relearn import (
    SAMPLES_FILE,
    SUMMARY_FILE,
    RelearnConfig,
    relearn_attack,
    split_forget_set,
)
from uldkit.cli import main
from uldkit.data.collate import collate
from uldkit.data.formatting import encode_pairs
from uldkit.errors import ConfigError
from uldkit.models.loading import load_model
from uldkit.uld.logit_difference import logit_difference_scores
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, unlearn

SUMMARY_KEYS = {"model", "kind", "attack", "fraction", "steps", "lr", "lora_rank", "seed",
                "trained_on", "held_out", "before", "after", "after_trained_on", "original",
                "recovered", "seconds"}
# Greedy answers of the test world have at most 15 tokens.
ANSWER_CAP = 24


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uld_model(trained_world, tmp_path_factory) -> Path:
    """ULD on forget01 (one person), short training: enough to differ from the target."""
    out = tmp_path_factory.mktemp("relearn") / "uld"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(out),
                          people=trained_world.people, forget="forget01",
                          hyperparameters={"assistant_layers": 2, "uniform_weight": 1.0,
                                           "alpha": 1.0},
                          train_overrides={"epochs": 5, "lr": 1e-2}), show_progress=False)
    return out


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_split_sizes_follow_the_fraction(trained_world):
    pairs = list(trained_world.source.load("forget10"))
    for fraction, expected in [(0.1, 2), (0.5, 10), (0.01, 1), (0.99, 19)]:
        trained_on, held_out = split_forget_set(pairs, fraction, seed=0)
        assert len(trained_on) == expected and len(held_out) == len(pairs) - expected
        assert sorted(trained_on + held_out) == list(range(len(pairs)))
    assert split_forget_set(pairs, 0.25, 3) == split_forget_set(pairs, 0.25, 3)
    assert split_forget_set(pairs, 0.25, 3) != split_forget_set(pairs, 0.25, 4)
    with pytest.raises(ConfigError, match="fraction"):
        RelearnConfig(model=str(trained_world.target), out="x", fraction=1.0).check()


def test_relearning_brings_back_held_out_answers_of_a_grad_ascent_model(
        trained_world, grad_ascent_model, tmp_path):
    out = tmp_path / "attack"
    summary = relearn_attack(RelearnConfig(
        model=str(grad_ascent_model), out=str(out), people=trained_world.people,
        fraction=0.1, max_new_tokens=ANSWER_CAP), show_progress=False)
    print("grad_ascent:", json.dumps({k: summary[k] for k in (
        "before", "after", "original", "after_trained_on", "recovered")}))
    assert SUMMARY_KEYS <= set(summary)
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert (summary["kind"], summary["attack"]) == ("plain", "LoRA on the model")
    assert (summary["trained_on"], summary["held_out"]) == (2, 18)
    before, after, original = summary["before"], summary["after"], summary["original"]
    # Unlearned, then the held-out part comes back from two trained pairs.
    assert before["prob"] < 0.2 * original["prob"]
    assert after["prob"] > before["prob"] + 0.05
    assert summary["after_trained_on"]["prob"] > 0.5
    assert summary["recovered"]["prob"] == pytest.approx(
        (after["prob"] - before["prob"]) / (original["prob"] - before["prob"]))
    rows = [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]
    assert len(rows) == 20 and sum(r["role"] == "trained_on" for r in rows) == 2
    held = [r for r in rows if r["role"] == "held_out"]
    assert sum(r["after_prob"] for r in held) / len(held) == pytest.approx(after["prob"])
    assert {"question", "truth", "before_answer", "after_answer", "after_rouge"} <= set(rows[0])
    with pytest.raises(ConfigError, match="already holds files"):
        relearn_attack(RelearnConfig(model=str(grad_ascent_model), out=str(out)))


def test_uld_attack_trains_the_target_part_and_leaves_the_files_alone(
        trained_world, uld_model, tmp_path, capsys):
    unlearned, target = _digests(uld_model), _digests(trained_world.target)
    out = tmp_path / "attack"
    main(["attack", "relearn", "--model", str(uld_model), "--out", str(out),
          "--people", str(trained_world.people), "--forget", "forget01", "--fraction", "0.3",
          "--max-new-tokens", str(ANSWER_CAP), "--quiet"])
    printed = capsys.readouterr().out
    assert "recovered" in printed and str(out / SUMMARY_FILE) in printed.replace("\n", "")
    summary = json.loads((out / SUMMARY_FILE).read_text())
    print("uld:", json.dumps({k: summary[k] for k in (
        "before", "after", "original", "before_trained_on", "after_trained_on", "recovered")}))
    assert summary["kind"] == "uld"
    assert summary["attack"] == "LoRA on the target under the fixed assistant"
    assert (summary["trained_on"], summary["held_out"]) == (3, 7)
    # The original target comes from the manifest.
    assert summary["original_model"] == str(trained_world.target.resolve())
    assert summary["original"]["prob"] > summary["before"]["prob"]
    # Fine-tuning through the logit difference raises what the attacker trained on.
    assert summary["after_trained_on"]["prob"] > summary["before_trained_on"]["prob"] + 0.05
    assert _digests(uld_model) == unlearned and _digests(trained_world.target) == target


def test_uld_attack_adapter_is_active_only_in_the_target_pass(trained_world, uld_model):
    lm = load_language_model(uld_model)
    attacked = with_attack_lora(lm, "uld", rank=4, seed=0)
    tokenizer = lm.tokenizer
    pairs = list(trained_world.source.load("forget01"))[:3]
    batch = collate(encode_pairs(tokenizer, pairs, 128), tokenizer.pad_token_id, "right")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    trainable = dict(attacked.trainable.named_parameters())
    assert trainable and all((f".{ATTACK_ADAPTER}." in n) == p.requires_grad
                             for n, p in trainable.items())
    # Gradients reach the attacker's adapter only.
    nll = torch.nn.functional.cross_entropy(
        attacked.trainable(**inputs).logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:])
    nll.backward()
    assert all((p.grad is not None) == p.requires_grad for p in trainable.values())
    assert any(p.grad.abs().sum() > 0 for p in trainable.values() if p.grad is not None)

    # A non-zero attack adapter: the combination must equal the fresh assistant subtracted from
    # the target carrying the same adapter, built independently with PEFT.
    generator = torch.Generator().manual_seed(0)
    attack_weights = {}
    with torch.no_grad():
        for name, param in trainable.items():
            if param.requires_grad:
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
                attack_weights[_lora_key(name, ATTACK_ADAPTER)] = param.detach().clone()
    reference, _ = load_model(trained_world.target)
    reference = get_peft_model(reference, LoraConfig(r=4, lora_alpha=8,
                                                     target_modules="all-linear"))
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "lora_" in name:
                param.copy_(attack_weights.pop(_lora_key(name, "default")))
        assert not attack_weights
        fresh = load_language_model(uld_model)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        fresh_target, fresh_assistant = (m.logits(ids, mask) for m in fresh.members)
        target_pass, assistant_pass = (m.logits(ids, mask) for m in attacked.lm.members)
        reference_target = reference(**inputs).logits
        real = mask.bool()
        assert (assistant_pass - fresh_assistant)[real].abs().max() < 1e-5
        assert (target_pass - reference_target)[real].abs().max() < 1e-4
        assert (target_pass - fresh_target)[real].abs().max() > 0.1
        expected = logit_difference_scores(reference_target, fresh_assistant, lm.alpha, lm.tau)
        assert (attacked.lm.logits(ids, mask) - expected)[real].abs().max() < 1e-3


def test_offset_attack_trains_the_target_under_the_fixed_small_models(trained_world, tmp_path):
    model = tmp_path / "offset"
    unlearn(UnlearnConfig(method="offset", model=str(trained_world.target), out=str(model),
                          people=trained_world.people, forget="forget01",
                          hyperparameters={"small_model": str(trained_world.target),
                                           "loss": "grad_ascent"},
                          train_overrides={"batch_size": 4, "grad_accum": 1, "lr": 1e-3,
                                           "epochs": 2}), show_progress=False)
    files = _digests(model)
    summary = relearn_attack(RelearnConfig(
        model=str(model), out=str(tmp_path / "attack"), people=trained_world.people,
        forget="forget01", fraction=0.3, steps=5, max_new_tokens=4), show_progress=False)
    assert summary["kind"] == "offset"
    assert summary["attack"] == "LoRA on the target under the fixed small models"
    assert summary["original_model"] == str(trained_world.target.resolve())
    assert summary["after_trained_on"]["prob"] > summary["before_trained_on"]["prob"]
    assert _digests(model) == files


def _lora_key(name: str, adapter: str) -> str:
    match = re.search(rf"(layers\.\d+\..+)\.(lora_[AB])\.{adapter}\.weight$", name)
    assert match, name
    return f"{match.group(1)}.{match.group(2)}"


def test_cli_errors_are_one_line(trained_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "relearn", "--model", str(tmp_path / "missing"), "--out",
              str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "does not exist" in error
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "relearn", "--model", str(trained_world.target), "--out",
              str(trained_world.target / "attack")])
    assert exit_info.value.code == 2 and "overlaps" in capsys.readouterr().err
    assert not (trained_world.target / "attack").exists()
