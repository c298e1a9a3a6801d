"""The training loop's settings, with their bounds and help (light: no torch import, so the
command line can build its options from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from uldkit.training.schema import check_fields, param


@dataclass
class TrainConfig:
    """The training loop's settings; each field's bounds are checked on construction."""

    epochs: int = param(1, "Passes over the forget (or training) set.", min=1)
    batch_size: int = param(8, "Examples per process and micro-batch.", min=1)
    grad_accum: int = param(1, "Micro-batches per optimizer step.", min=1)
    lr: float = param(1e-4, "Peak learning rate (AdamW).", min=0, exclusive_min=True)
    weight_decay: float = param(0.0, "AdamW weight decay.", min=0)
    warmup_ratio: float = param(0.0, "Share of the steps the rate warms up over.", min=0, max=1)
    scheduler: str = param("linear", "Learning-rate schedule (a transformers scheduler name).")
    max_grad_norm: float | None = param(1.0, "Gradient clipping norm; None or 0: no clipping.",
                                        min=0)
    seed: int = param(0, "Seed of initialisation and data order.")
    max_steps: int | None = param(None, "Stop after this many optimizer steps.", min=1)
    checkpoint_every: int = param(0, "Checkpoint every N optimizer steps; 0: each epoch.", min=0)
    keep_checkpoints: int = param(2, "Complete checkpoints kept on disk.", min=1)
    padding_side: Literal["right", "left"] = param("right", "Side batches are padded on.")
    show_progress: bool = param(True, "Show a progress bar.")
    description: str = param("training", "The progress bar's label.")

    def __post_init__(self) -> None:
        check_fields(self, noun="training setting")
