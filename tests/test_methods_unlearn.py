"""Every baseline really unlearns the trained tiny target's forget10 set.

Tolerances, per method: the forget-set answer probability must fall below FORGET_FALL x the
target's; for methods with a retain term, the retain_perturbed answer probability must stay
at or above RETAIN_KEEP x the target's. The cases (tests/unlearn_cases.py) are shared with
scripts/measure_test_margins.py, which measures their spread over seeds.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner
from unlearn_cases import CASES, LORA_CASE, offset_case, probabilities, run_case

from uldkit.cli import app
from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX, Encoded, encode_prompt
from uldkit.errors import TrainingError
from uldkit.models.lm import CausalLM
from uldkit.models.loading import load_model
from uldkit.models.scoring import answer_losses
from uldkit.training.run_dir import read_manifest
from uldkit.unlearning.catalog import all_methods
from uldkit.unlearning.load import load_language_model

# Bars from the spread over five seeds (0-4) of the target's training and the unlearning
# run: `scripts/measure_test_margins.py --baselines-only --seeds 0 1 2 3 4` prints them as
# <method>_forget_ratio / <method>_retain_ratio. Each bar is the mean + 4 sample sd of the
# forget ratio (or mean - 4 sd of the retain ratio), rounded outward to 0.01, so numerics
# that move a figure as another seed would still pass. Per seed 0 1 2 3 4:
FORGET_FALL = {  # the forget10 answer probability must fall below this share of the target's
    "grad_ascent": 0.01,  # 0.003 3e-5 1e-6 1e-4 0.002: mean + 4 sd 0.006
    "grad_diff": 0.79,  # 0.391 0.373 0.240 0.507 0.435: 0.782
    "kl": 0.82,  # 0.269 0.273 0.099 0.317 0.468: 0.812
    "npo": 0.01,  # 4e-5 2e-5 9e-7 2e-5 4e-6: 0.000
    "npo+grad_diff": 0.01,  # 2e-4 4e-4 3e-4 4e-4 2e-4: 0.001
    "npo+kl": 0.01,  # 2e-4 3e-4 2e-4 3e-4 1e-4: 0.001
    "simnpo": 0.48,  # 0.348 0.275 0.345 0.369 0.345: 0.479
    "dpo": 0.08,  # 0.042 0.006 0.026 0.016 0.007: 0.079
    "idk_dpo": 0.58,  # 0.224 0.247 0.193 0.375 0.157: 0.571
    "idk": 0.42,  # 0.356 0.334 0.303 0.324 0.344: 0.414
    "undial": 0.11,  # 0.077 0.071 0.084 0.062 0.071: 0.106
    "rmu": 0.56,  # 0.272 0.337 0.201 0.328 0.176: 0.555
    "npo+grad_diff (LoRA)": 0.02,  # 0.008 0.007 0.002 0.011 0.008: 0.019
    "offset": 0.79,  # 0.391 0.373 0.240 0.507 0.435: 0.782 (the small model is the target)
}
RETAIN_KEEP = {  # a retain term keeps the retain_perturbed probability at or above this share
    "grad_diff": 0.75,  # 0.934 0.905 0.844 0.921 0.932: mean - 4 sd 0.758
    "kl": 0.51,  # 0.907 0.816 0.719 0.875 0.924: 0.515
    "npo+grad_diff": 0.87,  # 0.947 0.957 0.945 0.928 0.916: 0.874
    "npo+kl": 0.87,  # 0.946 0.950 0.934 0.926 0.912: 0.872
    "simnpo": 0.76,  # 0.820 0.843 0.846 0.840 0.809: 0.767
    "idk_dpo": 0.79,  # 0.832 0.844 0.831 0.858 0.846: 0.797
    "idk": 0.76,  # 0.827 0.822 0.806 0.841 0.848: 0.763
    "rmu": 0.93,  # 0.966 0.966 0.960 0.959 0.950: 0.935
    "offset": 0.75,  # 0.934 0.905 0.844 0.921 0.932: 0.758
}


@pytest.fixture(scope="module")
def before(trained_world) -> tuple[float, float]:
    forget, retain = probabilities(load_language_model(trained_world.target),
                                   trained_world.source)
    assert forget > 0.8 and retain > 0.8  # the target really knows both
    return forget, retain


def _unlearn(world, tmp_path, method, hyperparameters, train, name=None):
    return run_case(world.target, world.people, tmp_path / (name or method.replace("+", "_")),
                    method, hyperparameters, train)


@pytest.mark.parametrize("method, hyperparameters, train, keeps_retain", CASES,
                         ids=[case[0] for case in CASES])
def test_method_unlearns_the_forget_set(trained_world, before, tmp_path, method,
                                        hyperparameters, train, keeps_retain):
    out = _unlearn(trained_world, tmp_path, method, hyperparameters, train)
    manifest = read_manifest(out)
    assert manifest["kind"] == "plain" and manifest["method"] == method
    forget, retain = probabilities(load_language_model(out), trained_world.source)
    print(f"{method}: forget {before[0]:.3f} -> {forget:.3f}, "
          f"retain {before[1]:.3f} -> {retain:.3f}")
    assert forget < FORGET_FALL[method] * before[0]
    assert keeps_retain == (method in RETAIN_KEEP)
    if keeps_retain:
        assert retain >= RETAIN_KEEP[method] * before[1]
    streams = json.loads((out / "run_config.json").read_text())["config"]["streams"]
    assert streams["forget"] == 20
    assert ("idk" in streams) == (method in ("dpo", "idk_dpo", "idk"))


def test_lora_training_saves_a_merged_plain_model(trained_world, before, tmp_path):
    method, hyperparameters, train, _ = LORA_CASE
    out = _unlearn(trained_world, tmp_path, method, hyperparameters, train)
    assert not list(out.glob("adapter_*"))
    model, _ = load_model(out)
    target, _ = load_model(trained_world.target)
    assert not any("lora" in name for name, _ in model.named_parameters())
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), target.named_parameters())
               if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # LoRA touches linear layers only
    forget, retain = probabilities(load_language_model(out), trained_world.source)
    print(f"npo+grad_diff (LoRA): forget {before[0]:.3f} -> {forget:.3f}, "
          f"retain {before[1]:.3f} -> {retain:.3f}")
    assert forget < FORGET_FALL["npo+grad_diff (LoRA)"] * before[0]


def test_rmu_trains_only_mlp_output_projections_up_to_its_layer(trained_world, tmp_path):
    out = _unlearn(trained_world, tmp_path, "rmu", {"layer": 2, "alpha": 100},
                   {"lr": 1e-2, "epochs": 1})
    model, _ = load_model(out)
    target, _ = load_model(trained_world.target)
    changed = {n for (n, p), (_, q) in zip(model.named_parameters(), target.named_parameters())
               if not torch.equal(p, q)}
    assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)}
    recorded = read_manifest(out)["hyperparameters"]
    assert recorded["layer"] == 2 and recorded["steering_coeff"] > 0


def test_offset_unlearning_combines_three_models(trained_world, before, tmp_path):
    method, hyperparameters, train, _ = offset_case(trained_world.target)
    out = _unlearn(trained_world, tmp_path, method, hyperparameters, train)
    manifest = read_manifest(out)
    assert manifest["kind"] == "offset" and manifest["loss"] == "grad_diff"
    lm = load_language_model(out)
    forget, retain = probabilities(lm, trained_world.source)
    print(f"offset (grad_diff): forget {before[0]:.3f} -> {forget:.3f}, "
          f"retain {before[1]:.3f} -> {retain:.3f}")
    assert forget < FORGET_FALL["offset"] * before[0]
    assert retain >= RETAIN_KEEP["offset"] * before[1]

    # the combined scores are target + (unlearned small - frozen small), exactly
    target, tokenizer = load_model(trained_world.target)
    frozen, _ = load_model(manifest["small_model"])
    unlearned, _ = load_model(out / manifest["small_unlearned"])
    question = trained_world.source.load("forget10")[0].question
    prompt = encode_prompt(tokenizer, question)
    batch = collate([Encoded(prompt, [IGNORE_INDEX] * len(prompt))], tokenizer.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        expected = (target(input_ids=ids).logits
                    + (unlearned(input_ids=ids).logits - frozen(input_ids=ids).logits))
        combined = lm.logits(ids, mask)
    assert torch.allclose(combined, expected, atol=1e-4)
    assert not torch.allclose(combined, target(input_ids=ids).logits, atol=1e-2)

    # decoding with three KV caches gives the same scores as a full forward pass
    decoding = lm.start_decoding(ids, mask)
    assert torch.allclose(decoding.scores, combined[:, -1], atol=1e-4)
    next_token = decoding.scores.argmax(-1)
    decoding.advance(next_token)
    longer = torch.cat([ids, next_token[:, None]], dim=1)
    with torch.no_grad():
        full = lm.logits(longer, torch.ones_like(longer))
    assert torch.allclose(decoding.scores, full[:, -1], atol=1e-4)

    # a different scale at load time changes only the offset's weight
    half = load_language_model(out, scale=0.5)
    with torch.no_grad():
        halfway = half.logits(ids, mask)
        base = target(input_ids=ids).logits
    assert torch.allclose(halfway, base + 0.5 * (combined - base), atol=1e-4)


def test_divergence_stops_with_the_step_and_keeps_a_finite_checkpoint(trained_world, tmp_path):
    with pytest.raises(TrainingError) as caught:
        _unlearn(trained_world, tmp_path, "grad_ascent", {},
                 {"lr": 1e4, "epochs": 5, "checkpoint_every": 1}, name="diverged")
    message = str(caught.value)
    assert re.search(r"non-finite at step \d+", message)
    kept = re.search(r"last good checkpoint is (\S+)", message)
    assert kept, message
    weights = load_file(f"{kept.group(1)}/trainable.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    model, tokenizer = load_model(trained_world.target)
    model.load_state_dict(weights, strict=False)
    forget = trained_world.source.load("forget10")
    losses = answer_losses(CausalLM(model, tokenizer), [p.question for p in forget],
                           [p.answer for p in forget])
    assert all(math.isfinite(x) for x in losses)


def test_methods_command_lists_every_method_as_json():
    import uldkit.cli.methods_cmd  # noqa: F401  (registers the command)

    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.output)}
    assert set(listed) == set(all_methods())
    for name in ("grad_ascent", "grad_diff", "kl", "npo", "npo+grad_diff", "npo+kl", "simnpo",
                 "dpo", "idk_dpo", "idk", "rmu", "undial", "offset"):
        assert name in listed
    assert listed["npo"]["kind"] == "edits weights"
    assert listed["offset"]["kind"] == "adds an assistant"
    assert listed["npo"]["hyperparameters"]["beta"] == 0.1
    assert listed["rmu"]["default_training"]["lr"] == 5e-5
    assert all(row["hyperparameters"] for row in listed.values())
    assert listed["uld"]["hyperparameters"]["lora_r"] == 16
    assert listed["uld"]["hyperparameters"]["uniform_weight"] == 5.0
    table = CliRunner().invoke(app, ["methods"])
    assert table.exit_code == 0 and "npo+grad_diff" in table.output
