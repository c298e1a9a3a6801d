"""The quantisation attack on a grad-ascent and a ULD model of the trained tiny target."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from uldkit.attacks import quantize as quantize_module
from uldkit.attacks.quantize import QuantizeConfig, quantize_attack, quantize_weights
from uldkit.cli import main
from uldkit.data.sources import DataSource
from uldkit.errors import ConfigError, MissingExtraError
from uldkit.models.scoring import answer_losses
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, unlearn

pytest.importorskip("optimum.quanto")
from optimum.quanto import QModuleMixin  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ANSWER_CAP = 24  # greedy answers of the test world have at most 15 tokens


@pytest.fixture(scope="module")
def uld_model(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "uld"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(out),
                          people=trained_world.people, forget="forget01",
                          hyperparameters={"assistant_layers": 2, "uniform_weight": 1.0,
                                           "alpha": 1.0},
                          train_overrides={"epochs": 2, "lr": 1e-2}), show_progress=False)
    return out


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in module.named_modules()
            if isinstance(m, nn.Linear)}


def test_grad_ascent_model_quantised_to_4_bits(trained_world, grad_ascent_model, tmp_path):
    out = tmp_path / "q4"
    summary = quantize_attack(QuantizeConfig(
        model=str(grad_ascent_model), out=str(out), bits=4, people=trained_world.people,
        max_new_tokens=ANSWER_CAP))
    assert json.loads((out / "quantize.json").read_text()) == summary
    rows = [json.loads(line) for line in (out / "quantize_samples.jsonl").read_text().splitlines()]
    pairs = list(trained_world.source.load("forget10"))
    assert len(rows) == summary["pairs"] == len(pairs)
    # 4 decoder layers x 7 projections; the LM head stays in floating point
    assert summary["quantised"] == {"qtype": "qint4", "linear_layers": 28,
                                    "kept_in_float": ["lm_head"]}
    # before: the unlearned model's own forget Prob., as scored directly
    lm = load_language_model(grad_ascent_model, device="cpu")
    direct = torch.tensor(answer_losses(lm, [p.question for p in pairs],
                                        [p.answer for p in pairs])).neg().exp().mean()
    assert summary["before"]["prob"] == pytest.approx(float(direct), rel=1e-5)
    # the original target (named by the manifest) knows the answers; the attack's figures
    assert summary["original_model"] == str(trained_world.target)
    assert summary["original"]["prob"] > 0.9 > 0.1 > summary["before"]["prob"]
    gap = summary["original"]["prob"] - summary["before"]["prob"]
    assert summary["recovered"]["prob"] == pytest.approx(
        (summary["after"]["prob"] - summary["before"]["prob"]) / gap)
    # rounding to 4 bits changed the scores, every row carries before, after and original
    assert summary["after"]["prob"] != summary["before"]["prob"]
    assert all(row["after_answer"] is not None and row["original_prob"] > 0 for row in rows)


def test_weights_really_are_quantised(grad_ascent_model):
    lm = load_language_model(grad_ascent_model, device="cpu")
    floats = _weights(lm.model)
    quantised = quantize_weights(lm, 8)
    assert quantised["linear_layers"] == 28
    layers = {name: m for name, m in lm.model.named_modules() if isinstance(m, QModuleMixin)}
    assert len(layers) == 28 and "lm_head" not in layers
    for name, layer in layers.items():
        weight = layer.weight
        assert weight.qtype.name == "qint8"
        assert weight._data.dtype == torch.int8  # stored as 8-bit integers
        restored = weight.dequantize()
        # int8 per output channel: within half a step of the float weight, and not equal
        step = floats[name].abs().amax(dim=1, keepdim=True) / 127
        assert ((restored - floats[name]).abs() <= step * 0.5 + 1e-6).all(), name
        assert not torch.equal(restored, floats[name]), name


def test_uld_target_and_assistant_are_quantised_and_recombined(trained_world, uld_model,
                                                               tmp_path):
    lm = load_language_model(uld_model, device="cpu")
    pairs = list(DataSource("synthetic", people=trained_world.people).load("forget01"))
    questions, answers = [p.question for p in pairs], [p.answer for p in pairs]
    before = answer_losses(lm, questions, answers)
    quantised = quantize_weights(lm, 4)
    names = [name for name, m in lm.assistant.named_modules() if isinstance(m, QModuleMixin)]
    # the target's 28 projections and the assistant's LoRA A and B (2 layers x 7 x 2)
    assert sum(".lora_A." in n or ".lora_B." in n for n in names) == 28
    assert sum(n.endswith(".base_layer") for n in names) == 14  # adapted projections
    assert quantised["linear_layers"] == len(names) == 56
    assert all(lm.assistant.get_submodule(n).weight.qtype.name == "qint4" for n in names)
    after = answer_losses(lm, questions, answers)
    assert torch.isfinite(torch.tensor(after)).all() and not (after == before).all()
    summary = quantize_attack(QuantizeConfig(
        model=str(uld_model), out=str(tmp_path / "uld8"), bits=8, forget="forget01",
        people=trained_world.people, max_new_tokens=ANSWER_CAP))
    assert summary["kind"] == "uld" and summary["quantised"]["linear_layers"] == 56
    assert None not in summary["recovered"].values()


def test_bad_input_is_one_line_exit_2(trained_world, grad_ascent_model, tmp_path, capsys,
                                      monkeypatch):
    args = ["attack", "quantize", "--model", str(grad_ascent_model), "--people",
            str(trained_world.people), "--out", str(tmp_path / "q")]
    for extra, message in [(["--bits", "3"], "--bits must be 4 or 8, not 3"),
                           (["--bits", "4", "--forget", "forget11"], "forget11")]:
        with pytest.raises(SystemExit) as done:
            main([*args, *extra])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    # the library refusing (as it does for a layout or device it lacks kernels for)
    def refuses(*_, **__):
        raise RuntimeError("no kernel for this device\nmore detail")

    monkeypatch.setattr("optimum.quanto.quantize", refuses)
    with pytest.raises(SystemExit) as done:
        main([*args, "--bits", "4"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot quantise this model to 4 bits on this machine: no kernel" in err
    # the library absent: what to install
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)
    with pytest.raises(MissingExtraError, match=r'pip install "uldkit\[quantize\]"'):
        quantize_module.require_quanto()
    with pytest.raises(ConfigError, match="4 or 8"):
        QuantizeConfig(model=str(grad_ascent_model), out="x", bits=2).check()
