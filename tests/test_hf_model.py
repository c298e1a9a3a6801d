"""A ULD or offset run is a transformers model: `.generate`, `pipeline`, lm-eval's HFLM."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationMixin, pipeline

from uldkit.cli import main
from uldkit.errors import ModelError
from uldkit.uld.hf_model import ULDForCausalLM
from uldkit.unlearning.load import load_for_transformers

PROMPTS = ["Question: Where was Morbel Fenanlo born?\nAnswer:", "The capital of"]


@pytest.fixture(scope="module")
def uld_run(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "uld"
    main(["unlearn", "--method", "uld", "--model", str(trained_world.target), "--people", "20",
          "--out", str(out), "--epochs", "3", "--lr", "1e-2", "--batch-size", "8",
          "--param", "assistant_layers=2"])
    return out


@pytest.fixture(scope="module")
def offset_run(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "offset"
    main(["unlearn", "--method", "offset", "--model", str(trained_world.target), "--people", "20",
          "--out", str(out), "--epochs", "1", "--lr", "5e-4", "--batch-size", "8",
          "--param", f"small_model={trained_world.target}"])
    return out


def _cli_raw(run, prompt, capsys, tokens=24):
    capsys.readouterr()
    main(["generate", "--model", str(run), "--raw", "--prompt", prompt,
          "--max-new-tokens", str(tokens)])
    return capsys.readouterr().out.rstrip("\n")


@pytest.mark.parametrize("kind", ["uld", "offset"])
def test_greedy_generate_equals_uldkit_generate_raw(kind, uld_run, offset_run, capsys):
    run = uld_run if kind == "uld" else offset_run
    model, tokenizer = load_for_transformers(run)
    assert isinstance(model, ULDForCausalLM) and isinstance(model, GenerationMixin)
    for prompt in PROMPTS:
        expected = _cli_raw(run, prompt, capsys)
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert text == expected


def test_padded_batch_and_cache_give_the_same_tokens(uld_run):
    model, tokenizer = load_for_transformers(uld_run)
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=12, do_sample=False)
        uncached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    for row, prompt in enumerate(PROMPTS):  # each row as if alone
        alone = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            single = model.generate(**alone, max_new_tokens=12, do_sample=False)
        new = single[0, alone["input_ids"].shape[1]:]
        assert torch.equal(cached[row, batch["input_ids"].shape[1]:][:len(new)], new)


def test_pipeline_takes_the_model(uld_run):
    model, tokenizer = load_for_transformers(uld_run)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    result = generator(PROMPTS[0], max_new_tokens=8, do_sample=False)
    assert result[0]["generated_text"].startswith(PROMPTS[0])


def test_alpha_zero_gives_the_target_back(uld_run, trained_world):
    model = ULDForCausalLM.from_pretrained(uld_run, alpha=0.0, tau=0.0)
    target, tokenizer = load_for_transformers(trained_world.target)
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        ours = model.generate(**ids, max_new_tokens=16, do_sample=False)
        theirs = target.generate(**ids, max_new_tokens=16, do_sample=False)
    assert torch.equal(ours, theirs)


def test_another_target_is_refused_in_one_line(uld_run, trained_world):
    with pytest.raises(ModelError) as err:
        ULDForCausalLM.from_pretrained(uld_run, target=str(trained_world.retain))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="not a ULD or offset run"):
        ULDForCausalLM.from_pretrained(trained_world.target)


def test_a_missing_target_is_one_line(uld_run, tmp_path, capsys):
    moved = tmp_path / "run"
    manifest = json.loads((uld_run / "uldkit_model.json").read_text())
    moved.mkdir()
    for file in uld_run.iterdir():
        if file.is_file():
            (moved / file.name).write_bytes(file.read_bytes())
    (moved / "uldkit_model.json").write_text(json.dumps({**manifest, "target": str(tmp_path / "gone")}))
    with pytest.raises(SystemExit) as done:
        main(["eval", "harness", "--model", str(moved), "--tasks", "tofu_world_facts",
              "--out", str(tmp_path / "out")])
    assert done.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_harness_scores_a_uld_run_apart_from_its_target(uld_run, trained_world, tmp_path):
    pytest.importorskip("lm_eval")
    results = {}
    for name, model in (("target", trained_world.target), ("uld", uld_run)):
        main(["eval", "harness", "--model", str(model), "--tasks", "tofu_world_facts",
              "--out", str(tmp_path / name), "--batch-size", "16"])
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    uld = results["uld"]["results"]["tofu_world_facts"]
    target = results["target"]["results"]["tofu_world_facts"]
    assert 0.0 <= uld["acc,none"] <= 1.0
    assert (uld["acc,none"], uld["acc_norm,none"]) != (target["acc,none"], target["acc_norm,none"])
