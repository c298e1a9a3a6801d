"""One typed schema per method: checking, help output, saved keys, resume's comparison and the
demo's settings all come from it."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass

import pytest
from typer.testing import CliRunner

from uldkit.cli import app, main
from uldkit.cli.unlearn_cmd import parse_params
from uldkit.errors import ConfigError
from uldkit.methods.editing import WeightEditingMethod
from uldkit.methods.hyperparameters import Hyperparameters, RetainWeighted, param
from uldkit.training.schema import first_difference, parse_settings
from uldkit.training.trainer import TrainConfig
from uldkit.unlearning.catalog import all_methods, get_method
from uldkit.unlearning.run import checked_settings

LORA = {"lora": False, "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.05}
# Every method's keys and defaults as run_config.json and manifests record them; runs made
# before the schemas recorded the same keys, except ULD's, which held only those the user gave:
# a resume completes such a record with these defaults (`Hyperparameters.completed`).
RECORDED_DEFAULTS = {
    "grad_ascent": {**LORA, "forget_weight": 1.0},
    "grad_diff": {**LORA, "retain_weight": 1.0, "forget_weight": 1.0},
    "kl": {**LORA, "retain_weight": 1.0, "forget_weight": 1.0},
    "npo": {**LORA, "beta": 0.1, "forget_weight": 1.0},
    "npo+grad_diff": {**LORA, "retain_weight": 1.0, "beta": 0.1, "forget_weight": 1.0},
    "npo+kl": {**LORA, "retain_weight": 1.0, "beta": 0.1, "forget_weight": 1.0},
    "simnpo": {**LORA, "retain_weight": 1.0, "beta": 4.5, "gamma": 0.0, "forget_weight": 0.125},
    "dpo": {**LORA, "beta": 0.1, "forget_weight": 1.0},
    "idk_dpo": {**LORA, "retain_weight": 1.0, "beta": 0.1, "forget_weight": 1.0},
    "idk": {**LORA, "retain_weight": 1.0, "forget_weight": 1.0},
    "undial": {**LORA, "retain_weight": 0.0, "strength": 10.0, "forget_weight": 1.0},
    "rmu": {"layer": None, "trained_layers": 3, "steering_coeff": None, "steering_scale": 4.0,
            "alpha": 1200.0, "seed": 0},
    "uld": {"assistant_layers": None, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
            "uniform_weight": 5.0, "retain_count": None, "alpha": 0.8, "tau": 1e-4,
            "assistant": None},
    "offset": {"small_model": None, "loss": "grad_diff", "scale": 1.0},
}


def test_a_record_of_only_the_given_hyperparameters_is_completed_with_the_defaults():
    uld = all_methods()["uld"].schema
    assert uld.completed({"assistant_layers": 2, "lora_r": 8}) == {
        **RECORDED_DEFAULTS["uld"], "assistant_layers": 2, "lora_r": 8}
    assert uld.completed(RECORDED_DEFAULTS["uld"]) == RECORDED_DEFAULTS["uld"]


def test_every_method_declares_a_schema_with_the_recorded_keys_and_help():
    methods = all_methods()
    assert set(RECORDED_DEFAULTS) <= set(methods)
    for name, recorded in RECORDED_DEFAULTS.items():
        cls = methods[name]
        assert issubclass(cls.schema, Hyperparameters) and cls.schema is not Hyperparameters
        assert cls.schema.defaults() == recorded, name
        assert all(s.help for s in cls.schema.settings()), name
        if issubclass(cls, WeightEditingMethod) and cls.retain_loss:
            assert issubclass(cls.schema, RetainWeighted), name
    resolved = get_method("npo")(beta="0.5", lora="yes").params
    assert (resolved.beta, resolved.lora, resolved.lora_r) == (0.5, True, 8)
    with pytest.raises(FrozenInstanceError):
        resolved.beta = 1.0  # type: ignore[misc]


def test_values_from_the_command_line_are_coerced_and_bounds_named():
    params = parse_params(["beta=0.2", "lora=True", "lora_r=4.0", "lora_dropout=0"])
    method = get_method("npo+kl")(**params)
    assert method.hyperparameters == {**LORA, "lora": True, "lora_r": 4, "lora_dropout": 0.0,
                                      "forget_weight": 1.0, "retain_weight": 1.0, "beta": 0.2}
    assert method.given == {"beta", "lora", "lora_r", "lora_dropout"}
    cases = [
        ("npo", {"lora_dropout": 1.0}, "'lora_dropout' of method 'npo' must be in [0, 1), not 1.0"),
        ("simnpo", {"retain_weight": -1}, "'retain_weight' of method 'simnpo' must be >= 0"),
        ("rmu", {"layer": -1}, "'layer' of method 'rmu' must be >= 0"),
        ("rmu", {"trained_layers": "x"}, "'trained_layers' of method 'rmu' must be an integer"),
        ("grad_ascent", {"lora": "maybe"}, "'lora' of method 'grad_ascent' must be true or false"),
        ("uld", {"retain_count": float("nan")}, "'retain_count' of method 'uld' must be an integer"),
        ("uld", {"lora_r": None}, "'lora_r' of method 'uld' needs a value"),
        ("offset", {"small_model": "m", "betta": 1}, "unknown hyperparameter(s) betta of method "
         "'offset' (known: forget_weight, lora, lora_alpha, lora_dropout, lora_r, loss, "
         "retain_weight, scale, small_model)"),
    ]
    for name, values, message in cases:
        with pytest.raises(ConfigError) as err:
            get_method(name)(**values)
        assert message in str(err.value)


def test_a_schema_instance_can_be_passed_whole():
    npo = get_method("npo")
    ready = npo.schema.parse({"beta": 0.3}, "npo")
    method = npo(ready)
    assert method.params is ready and method.given == {"beta"}
    assert checked_settings("npo", ready, {})[0].hyperparameters["beta"] == 0.3
    with pytest.raises(ConfigError, match="takes keyword hyperparameters or one "
                                          "NPOHyperparameters, not RetainWeighted"):
        npo(RetainWeighted())
    with pytest.raises(ConfigError, match="'beta' of NPOHyperparameters must be positive"):
        npo.schema(beta=0)


def test_a_schema_states_its_bounds_and_a_required_key():
    @dataclass(frozen=True)
    class Toy(Hyperparameters):
        path: str = param(help="Where it is.")
        rate: float = param(0.5, "A rate.", min=0, max=1, exclusive_min=True)
        count: int | None = param(None, "How many.", min=1)

    bounds = {s.name: (s.bounds(), s.required) for s in Toy.settings()}
    assert bounds == {"path": ("", True), "rate": ("in (0, 1]", False), "count": (">= 1", False)}
    with pytest.raises(ConfigError, match="hyperparameter 'path' of method 'toy' is required: "
                                          "Where it is."):
        Toy.parse({"rate": 1}, "toy")
    assert Toy.parse({"path": "p", "count": "3"}, "toy").to_dict() == {
        "path": "p", "rate": 0.5, "count": 3}
    with pytest.raises(ConfigError, match=r"'rate' of method 'toy' must be in \(0, 1\], not 0"):
        Toy.parse({"path": "p", "rate": 0}, "toy")


def test_training_settings_have_bounds_from_their_fields():
    with pytest.raises(ConfigError, match="training setting 'lr' must be positive, not 0"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="training setting 'warmup_ratio' must be in"):
        checked_settings("npo", {}, {"warmup_ratio": 1.5})
    with pytest.raises(ConfigError, match="unknown training setting"):
        checked_settings("npo", {}, {"epoch": 1})
    config = parse_settings(TrainConfig, {"epochs": "3", "lr": "1e-3"}, noun="training setting")
    assert (config.epochs, config.lr) == (3, 1e-3)


def test_the_cli_refuses_a_bad_training_value_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["unlearn", "--method", "npo", "--model", str(tmp_path), "--out",
              str(tmp_path / "out"), "--lr", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "training setting 'lr' must be positive" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_methods_command_shows_each_parameter_with_default_bounds_and_help():
    shown = CliRunner().invoke(app, ["methods", "npo"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    beta = next(line for line in shown.output.splitlines() if " beta " in line)
    assert "0.1" in beta and "> 0" in beta and "Inverse temperature" in beta
    assert "lr=1e-05" in shown.output
    listed = json.loads(CliRunner().invoke(app, ["methods", "offset", "--json"]).output)
    small = next(p for p in listed["parameters"] if p["name"] == "small_model")
    assert small["required"] and "tokenizer" in small["help"]
    assert "uldkit methods LOSS" in listed["parameters_note"]


def test_first_difference_names_the_first_changed_key():
    saved = {"method": {"method": "npo", "hyperparameters": {"beta": 0.1, "lora": False}},
             "train": {"lr": 1e-3, "epochs": 5}, "streams": [20, 30]}
    assert first_difference(saved, json.loads(json.dumps(saved))) is None
    assert first_difference({"x": 1}, {"x": 1.0}) is None
    changed = json.loads(json.dumps(saved))
    changed["method"]["hyperparameters"]["beta"] = 0.2
    changed["train"]["lr"] = 1e-2
    assert first_difference(saved, changed) == "method.hyperparameters.beta: 0.1 -> 0.2"
    assert first_difference({"lora": 1}, {"lora": True}) == "lora: 1 -> True"
    assert first_difference({"a": [1, 2]}, {"a": [1, 3]}) == "a[1]: 2 -> 3"
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "b: '(absent)' -> 2"


def test_the_demo_settings_are_checked_when_built():
    from uldkit.demo.muse import MUSE_UNLEARN_SETTINGS
    from uldkit.demo.settings import UNLEARN_SETTINGS, MethodSettings, unlearn_settings

    assert set(UNLEARN_SETTINGS) == set(RECORDED_DEFAULTS) == set(MUSE_UNLEARN_SETTINGS)
    assert unlearn_settings("offset", "/models/target")[0] == {
        "small_model": "/models/target", "loss": "grad_diff"}
    with pytest.raises(ConfigError, match="unknown hyperparameter.*layr of method 'rmu'"):
        MethodSettings("rmu", train={"lr": 1e-2}, params={"layr": 2})
    with pytest.raises(ConfigError, match="unknown training setting.*epoch"):
        MethodSettings("npo", train={"epoch": 5})
