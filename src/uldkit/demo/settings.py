"""The demo's settings: model sizes, training and each method's demo-scale hyperparameters.

Each method's settings are a `MethodSettings`, checked when built against the method's
hyperparameter schema and TrainConfig: a typo or an out-of-range value fails at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uldkit.training.config import TrainConfig
from uldkit.training.schema import parse_settings

DEFAULT_METHODS = ("uld", "grad_diff", "npo")
BENCHMARKS = ("tofu", "muse", "tofu-real")
# People in the world and held-out people (MIA non-members) when not given, per benchmark:
# MUSE needs more forget passages (forget10 of 100 = 10 biographies) than TOFU needs people.
DEFAULT_PEOPLE = {"tofu": 40, "muse": 100}
DEFAULT_HOLDOUT = {"tofu": 10, "muse": 40}
# Greedy answer caps: the synthetic world's answers are short; on real TOFU, None is TOFU's
# own (200 tokens with the prompt), as its authors evaluate.
DEFAULT_MAX_NEW_TOKENS: dict[str, int | None] = {"tofu": 48, "muse": 48, "tofu-real": None}
# The relearning attack: 10% of the forget answers, 20 LoRA steps (RelearnConfig defaults).
RELEARN_SETTINGS: dict[str, Any] = {"fraction": 0.1, "steps": 20, "lora_rank": 8,
                                    "batch_size": 4}
# The quantisation attack: weights at each of these bit widths (needs optimum-quanto).
QUANTIZE_BITS = (8, 4)


def checked_training(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` unchanged, once TrainConfig accepts them (names, types, bounds)."""
    parse_settings(TrainConfig, settings, noun="training setting", owner=" in the demo")
    return settings


# Per-size training of target and retain models (measured to reach memorisation).
FINETUNE_SETTINGS = {
    "tiny": checked_training(dict(epochs=30, lr=3e-3, batch_size=16)),
    "small": checked_training(dict(epochs=30, lr=2e-3, batch_size=16)),
}


@dataclass(frozen=True)
class MethodSettings:
    """One method's demo-scale settings: training overrides and the hyperparameters given
    (the rest keep the method's defaults). "{target}" in a string stands for the target's
    directory."""

    method: str
    train: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from uldkit.unlearning.run import checked_settings

        checked_settings(self.method, self.params, self.train)

    def resolved(self, target_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hyperparameters, training overrides) for a run against `target_dir`."""
        params = {key: value.format(target=target_dir) if isinstance(value, str) else value
                  for key, value in self.params.items()}
        return params, dict(self.train)

# Demo-scale unlearning settings. The papers' defaults (e.g. lr 1e-5 for GradDiff and NPO,
# lr 1e-3 for ULD's LoRA) are made for 7B models and barely move a tiny model trained from
# scratch; these are the settings the method tests (tests/test_methods_unlearn.py) found to
# unlearn the tiny target. Offset unlearning's small model is the target itself here: the
# demo has no smaller model sharing the tokenizer, and the paper's smaller model only
# changes cost, not the combination.
_SMALL_STEPS = {"batch_size": 4, "warmup_ratio": 0.0}
UNLEARN_SETTINGS: dict[str, MethodSettings] = {s.method: s for s in (
    MethodSettings("uld", train={"lr": 1e-2, "epochs": 20},
                   params={"assistant_layers": 2, "uniform_weight": 1.0, "alpha": 1.0}),
    MethodSettings("grad_ascent", train={"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}),
    # grad_diff, npo and npo+grad_diff keep the default warm-up: the README's demo table.
    # Without it (as in the method tests), NPO's forget loss takes the tiny model's utility.
    MethodSettings("grad_diff", train={"lr": 5e-4, "epochs": 4, "batch_size": 4}),
    MethodSettings("kl", train={"lr": 5e-4, "epochs": 4, **_SMALL_STEPS}),
    MethodSettings("npo", train={"lr": 1e-3, "epochs": 5, "batch_size": 4}),
    MethodSettings("npo+grad_diff", train={"lr": 1e-3, "epochs": 10, "batch_size": 4}),
    MethodSettings("npo+kl", train={"lr": 1e-3, "epochs": 10, **_SMALL_STEPS}),
    MethodSettings("simnpo", train={"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}),
    MethodSettings("dpo", train={"lr": 1e-3, "epochs": 5, **_SMALL_STEPS}),
    MethodSettings("idk_dpo", train={"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}),
    MethodSettings("idk", train={"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}),
    MethodSettings("undial", train={"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}),
    MethodSettings("rmu", train={"lr": 1e-2, "epochs": 10, **_SMALL_STEPS},
                   params={"layer": 2, "alpha": 100}),
    MethodSettings("offset", train={"lr": 5e-4, "epochs": 4, **_SMALL_STEPS},
                   params={"small_model": "{target}", "loss": "grad_diff"}),
)}


def unlearn_settings(method: str, target_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training overrides) the demo uses for `method`."""
    settings = UNLEARN_SETTINGS.get(method) or MethodSettings(method, {})
    return settings.resolved(target_dir)


@dataclass
class DemoConfig:
    out: str
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    benchmark: str = "tofu"
    size: str = "tiny"
    people: int | None = None  # default: DEFAULT_PEOPLE[benchmark], or the given target's
    holdout: int | None = None  # held-out people (MIA non-members); DEFAULT_HOLDOUT
    forget: str = "forget10"
    seed: int = 0
    samples_per_method: int = 5
    max_new_tokens: int | None = None  # default: DEFAULT_MAX_NEW_TOKENS[benchmark]
    relearn: bool = True  # TOFU mode: the relearning attack on every unlearned model
    quantize: bool = True  # TOFU mode: 8- and 4-bit weights of every unlearned model
    target: str | None = None  # an existing target model directory: no fine-tuning
    retain: str | None = None  # an existing retain model directory: no fine-tuning
    # tofu-real (uldkit.demo.tofu_real): TOFU's folder (default ULDKIT_TOFU_DIR), full TOFU
    # or the CPU subset, and the subset's size (None: the preset's).
    data: str | None = None
    full: bool = False
    retain_authors: int | None = None
    forget_authors: int | None = None  # None: the whole forget split
    utility_rows: int | None = None  # real-author / world-fact rows kept; None: all
    finetune_epochs: int | None = None  # None: the size's FINETUNE_SETTINGS
