"""A method from outside the package: one class and its schema, registered, run by `uldkit
unlearn` end to end (CONTRIBUTING.md walks through the same steps)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from uldkit.cli import main
from uldkit.errors import ConfigError
from uldkit.methods.editing import WeightEditingMethod
from uldkit.methods.hyperparameters import LoraHyperparameters, param
from uldkit.models.scoring import mean_answer_probability
from uldkit.training.losses import stream_token_nll
from uldkit.training.trainer import Batch, LossTerm, answer_token_count
from uldkit.unlearning.catalog import all_methods, get_method, registered
from uldkit.unlearning.load import load_language_model


@dataclass(frozen=True)
class ScaledAscentHyperparameters(LoraHyperparameters):
    scale: float = param(1.5, "Multiplier of the ascended forget loss.", min=0,
                         exclusive_min=True)


class ScaledAscent(WeightEditingMethod):
    """Gradient ascent with its loss multiplied by `scale`."""

    name = "test_scaled_ascent"
    summary = "Maximise scale x the next-token loss on the forget answers."
    paper = "A test of the method interface"
    schema = ScaledAscentHyperparameters
    default_training: ClassVar[dict[str, Any]] = {"lr": 1e-3, "epochs": 3, "batch_size": 4,
                                                  "warmup_ratio": 0.0}

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": answer_token_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, _ = stream_token_nll(model, batch["forget"])
        return {"forget": LossTerm(-nll.sum(), self.params.scale)}


@pytest.fixture(scope="module")
def scaled_ascent():
    with registered(ScaledAscent) as cls:
        yield cls
    assert ScaledAscent.name not in all_methods()  # the normal catalog for other tests


def _unlearn_args(world, out, *params: str) -> list[str]:
    args = ["unlearn", "--method", ScaledAscent.name, "--model", str(world.target),
            "--out", str(out), "--people", str(world.people), "--forget", "forget10"]
    return args + [arg for p in params for arg in ("--param", p)]


def _forget_probability(path, world) -> float:
    forget = world.source.load("forget10")
    return mean_answer_probability(load_language_model(path), [p.question for p in forget],
                                   [p.answer for p in forget])


def test_a_registered_method_unlearns_through_the_cli(scaled_ascent, trained_world, tmp_path):
    out = tmp_path / "scaled"
    main(_unlearn_args(trained_world, out, "scale=2.0"))
    before = _forget_probability(trained_world.target, trained_world)
    after = _forget_probability(out, trained_world)
    assert before > 0.8 and after < 0.5 * before, (before, after)
    saved = json.loads((out / "run_config.json").read_text())["config"]
    assert saved["method"] == {"method": ScaledAscent.name, "hyperparameters": {
        "lora": False, "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "scale": 2.0}}
    assert saved["train"]["lr"] == 1e-3 and saved["train"]["epochs"] == 3


@pytest.mark.parametrize(("value", "expected"), [
    ("scale=0", "hyperparameter 'scale' of method 'test_scaled_ascent' must be positive"),
    ("scale='big'", "must be a number"),
    ("scael=2", "unknown hyperparameter(s) scael of method 'test_scaled_ascent' (known: lora, "
                "lora_alpha, lora_dropout, lora_r, scale)"),
])
def test_its_hyperparameters_are_checked_before_anything_runs(scaled_ascent, trained_world,
                                                              tmp_path, capsys, value, expected):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as done:
        main(_unlearn_args(trained_world, out, value))
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="must be positive"):
        get_method(ScaledAscent.name)(scale=-1.0)
