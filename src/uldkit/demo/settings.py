"""The demo's settings: model sizes, training and each method's demo-scale hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("uld", "grad_diff", "npo")
BENCHMARKS = ("tofu", "muse")
# People in the world and held-out people (MIA non-members) when not given, per benchmark:
# MUSE needs more forget passages (forget10 of 100 = 10 biographies) than TOFU needs people.
DEFAULT_PEOPLE = {"tofu": 40, "muse": 100}
DEFAULT_HOLDOUT = {"tofu": 10, "muse": 40}
# The relearning attack: 10% of the forget answers, 20 LoRA steps (RelearnConfig defaults).
RELEARN_SETTINGS: dict[str, Any] = {"fraction": 0.1, "steps": 20, "lora_rank": 8,
                                    "batch_size": 4}

# Per-size training of target and retain models (measured to reach memorisation).
FINETUNE_SETTINGS = {
    "tiny": dict(epochs=30, lr=3e-3, batch_size=16),
    "small": dict(epochs=30, lr=2e-3, batch_size=16),
}
# Demo-scale unlearning settings. The papers' defaults (e.g. lr 1e-5 for GradDiff and NPO,
# lr 1e-3 for ULD's LoRA) are made for 7B models and barely move a tiny model trained from
# scratch; these are the settings the method tests (tests/test_methods_unlearn.py) found to
# unlearn the tiny target. Offset unlearning's small model is the target itself here: the
# demo has no smaller model sharing the tokenizer, and the paper's smaller model only
# changes cost, not the combination.
_SMALL_STEPS = {"batch_size": 4, "warmup_ratio": 0.0}
UNLEARN_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "uld": {"train": {"lr": 1e-2, "epochs": 20},
            "params": {"assistant_layers": 2, "uniform_weight": 1.0, "alpha": 1.0}},
    "grad_ascent": {"train": {"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}},
    # grad_diff, npo and npo+grad_diff keep the default warm-up: the README's demo table.
    # Without it (as in the method tests), NPO's forget loss takes the tiny model's utility.
    "grad_diff": {"train": {"lr": 5e-4, "epochs": 4, "batch_size": 4}},
    "kl": {"train": {"lr": 5e-4, "epochs": 4, **_SMALL_STEPS}},
    "npo": {"train": {"lr": 1e-3, "epochs": 5, "batch_size": 4}},
    "npo+grad_diff": {"train": {"lr": 1e-3, "epochs": 10, "batch_size": 4}},
    "npo+kl": {"train": {"lr": 1e-3, "epochs": 10, **_SMALL_STEPS}},
    "simnpo": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "dpo": {"train": {"lr": 1e-3, "epochs": 5, **_SMALL_STEPS}},
    "idk_dpo": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "idk": {"train": {"lr": 3e-3, "epochs": 5, **_SMALL_STEPS}},
    "undial": {"train": {"lr": 1e-3, "epochs": 3, **_SMALL_STEPS}},
    "rmu": {"train": {"lr": 1e-2, "epochs": 10, **_SMALL_STEPS},
            "params": {"layer": 2, "alpha": 100}},
    "offset": {"train": {"lr": 5e-4, "epochs": 4, **_SMALL_STEPS},
               "params": {"small_model": "{target}", "loss": "grad_diff"}},
}


def unlearn_settings(method: str, target_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training overrides) the demo uses for `method`."""
    settings = UNLEARN_SETTINGS.get(method, {})
    params = {key: value.format(target=target_dir) if isinstance(value, str) else value
              for key, value in settings.get("params", {}).items()}
    return params, dict(settings.get("train", {}))


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
    max_new_tokens: int = 48
    relearn: bool = True  # TOFU mode: the relearning attack on every unlearned model
    target: str | None = None  # an existing target model directory: no fine-tuning
    retain: str | None = None  # an existing retain model directory: no fine-tuning
