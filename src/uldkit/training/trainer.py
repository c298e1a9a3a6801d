"""The one training loop that fine-tuning and every unlearning method share.

A method supplies an `Objective`: how many units (tokens, samples) each loss term averages
over in a batch, and the summed loss of each term. The loop normalises every term by its
count over the whole optimizer step (all micro-batches, all processes), so one process with
batch 8 and two processes with batch 4 take the same step. It is built on 🤗 Accelerate:
`accelerate launch` or `torchrun` runs it on several processes unchanged.

Checkpoints hold the trainable weights, optimizer, scheduler, RNG states and data position
in safetensors + JSON (no pickle); a checkpoint directory is complete once its COMPLETE
marker exists, and `resume=True` continues from the newest complete one.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError, TrainingError
from uldkit.training.progress import LoopProgress

Batch = dict[str, dict[str, torch.Tensor]]
CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    max_steps: int | None = None
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end of every epoch
    keep_checkpoints: int = 2
    padding_side: str = "right"
    show_progress: bool = True
    description: str = "training"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("epochs, batch_size and grad_accum must be at least 1")
        if self.lr <= 0:
            raise ConfigError("lr must be positive")


@dataclass
class LossTerm:
    total: torch.Tensor  # sum over this micro-batch's units
    weight: float = 1.0


class Objective(Protocol):
    def counts(self, batch: Batch) -> dict[str, float]:
        """Units each term averages over in this micro-batch (computed from the batch alone)."""

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        """Summed loss of each term named in `counts`."""


def answer_token_count(stream: dict[str, torch.Tensor]) -> float:
    return float((stream["labels"][:, 1:] != IGNORE_INDEX).sum())


@dataclass
class StreamData:
    """Named streams of encoded examples; an epoch walks the `primary` stream once.

    Other streams are paired with it by a seeded shuffle of their own, cycled when shorter.
    An `aligned` stream instead follows the primary's order, example for example (it must
    be as long): row i of its batch belongs with row i of the primary's (e.g. DPO pairs).
    """

    streams: dict[str, Sequence[Encoded]]
    primary: str
    aligned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.primary not in self.streams:
            raise ConfigError(f"primary stream '{self.primary}' is not among the streams")
        for name, examples in self.streams.items():
            if len(examples) == 0:
                raise ConfigError(f"the '{name}' data set is empty")
        for name in self.aligned:
            if len(self.streams.get(name, ())) != len(self.streams[self.primary]):
                raise ConfigError(
                    f"stream '{name}' is aligned with '{self.primary}' but not as long"
                )

    def order_source(self, name: str) -> str:
        """The stream whose shuffle orders `name`."""
        return self.primary if name in self.aligned else name

    def __len__(self) -> int:
        return len(self.streams[self.primary])


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        data: StreamData,
        config: TrainConfig,
        pad_token_id: int,
        checkpoint_dir: str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        self.config = config
        self.objective = objective
        self.data = data
        self.pad_token_id = pad_token_id
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.on_step = on_step
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index

        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("the model has no trainable parameters")
        self.steps_per_epoch = math.ceil(len(data) / self.global_batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(
            config.scheduler,
            optimizer,
            num_warmup_steps=int(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.config.grad_accum * self.world

    # ---- data order -------------------------------------------------------------------
    def _epoch_order(self, name: str, epoch: int) -> list[int]:
        n = len(self.data.streams[name])
        offset = sorted(self.data.streams).index(name)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch * 7919 + offset)
        return torch.randperm(n, generator=generator).tolist()

    def _micro_batch(self, step: int, micro: int) -> Batch:
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        b = self.config.batch_size
        start = step_in_epoch * self.global_batch + micro * b * self.world + self.rank * b
        positions = range(start, start + b)
        batch: Batch = {}
        for name, examples in self.data.streams.items():
            order = self._epoch_order(self.data.order_source(name), epoch)
            picked = [examples[order[p % len(order)]] for p in positions]
            batch[name] = {
                k: v.to(self.accelerator.device)
                for k, v in collate(picked, self.pad_token_id, self.config.padding_side).items()
            }
        return batch

    # ---- the loop -----------------------------------------------------------------------
    def train(self, resume: bool = False) -> TrainResult:
        start_step, resumed_from = 0, None
        if resume:
            start_step = self._load_latest_checkpoint()
            resumed_from = start_step or None
        if start_step == 0:
            self._seed_everything()
        history: list[dict] = []
        loss_value = float("nan")
        started = time.perf_counter()
        self.model.train()
        with self._progress(start_step) as progress:
            for step in range(start_step, self.total_steps):
                loss_value, parts = self._optimizer_step(step)
                history.append({"step": step + 1, "loss": loss_value, **parts})
                progress.advance(1, note=f"loss {loss_value:.4f}")
                if self.on_step:
                    self.on_step(step + 1, loss_value)
                if self._checkpoint_due(step + 1):
                    self.save_checkpoint(step + 1)
        self.model.eval()
        return TrainResult(
            steps=self.total_steps,
            seconds=time.perf_counter() - started,
            final_loss=loss_value,
            history=history,
            resumed_from=resumed_from,
        )

    def _optimizer_step(self, step: int) -> tuple[float, dict[str, float]]:
        micro_batches = [self._micro_batch(step, m) for m in range(self.config.grad_accum)]
        counts: dict[str, float] = {}
        for batch in micro_batches:
            for name, count in self.objective.counts(batch).items():
                counts[name] = counts.get(name, 0.0) + count
        names = sorted(counts)
        global_counts = self.accelerator.reduce(
            torch.tensor([counts[n] for n in names], device=self.accelerator.device), "sum"
        )
        normaliser = {n: max(float(c), 1.0) for n, c in zip(names, global_counts.tolist())}

        parts = {n: 0.0 for n in names}
        for batch in micro_batches:
            terms = self.objective.losses(self.model, batch)
            loss = sum(
                term.weight * term.total / normaliser[name] for name, term in terms.items()
            )
            for name, term in terms.items():
                parts[name] += float(term.total.detach()) / normaliser[name]
            finite = torch.tensor(float(torch.isfinite(loss.detach()).all()),
                                  device=self.accelerator.device)
            if float(self.accelerator.reduce(finite, "min")) < 1:
                raise TrainingError(self._non_finite_message(step + 1))
            # DDP averages gradients over processes; scale so they add up instead.
            self.accelerator.backward(loss * self.world)
        # Measured (and clipped when asked) before the update: a non-finite gradient would
        # write NaN into the weights, and into the next checkpoint. (Under fp16 loss scaling
        # the scaler skips such steps itself.)
        grad_norm = self.accelerator.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad],
            self.config.max_grad_norm or math.inf,
        )
        if self.accelerator.scaler is None and not math.isfinite(float(grad_norm)):
            raise TrainingError(self._non_finite_message(step + 1, "gradient"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        reduced = self.accelerator.reduce(
            torch.tensor([parts[n] for n in names], device=self.accelerator.device), "sum"
        ).tolist()
        parts = dict(zip(names, reduced))
        weights = {n: t.weight for n, t in terms.items()}
        total = sum(weights[n] * parts[n] for n in names)
        return total, {f"loss_{n}": v for n, v in parts.items()}

    def _non_finite_message(self, step: int, what: str = "loss") -> str:
        last = self.latest_checkpoint()
        kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint was saved yet"
        return (
            f"the {what} became non-finite at step {step} (training diverged; try a lower "
            f"learning rate or fewer epochs){kept}"
        )

    def _checkpoint_due(self, done: int) -> bool:
        if self.checkpoint_dir is None:
            return False
        if done == self.total_steps:
            return True
        every = self.config.checkpoint_every or self.steps_per_epoch
        return done % every == 0

    def _progress(self, start_step: int) -> LoopProgress:
        return LoopProgress(
            self.total_steps, self.config.description, "steps", completed=start_step,
            enabled=self.config.show_progress and self.accelerator.is_main_process)

    def _seed_everything(self) -> None:
        seed = self.config.seed + self.rank
        random.seed(seed)
        torch.manual_seed(seed)

    # ---- checkpoints --------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                if p.requires_grad}

    def latest_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None or not self.checkpoint_dir.exists():
            return None
        complete = [
            (int(m.group(1)), d) for d in self.checkpoint_dir.iterdir()
            if (m := CHECKPOINT_PATTERN.match(d.name)) and (d / "COMPLETE").exists()
        ]
        return max(complete)[1] if complete else None

    def save_checkpoint(self, step: int) -> Path:
        assert self.checkpoint_dir is not None
        final = self.checkpoint_dir / f"step-{step:07d}"
        staging = self.checkpoint_dir / f".step-{step:07d}.partial"
        if self.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            save_file(self.trainable_state(), str(staging / "trainable.safetensors"))
            tensors, meta = _flatten_optimizer(self.optimizer.state_dict())
            save_file(tensors, str(staging / "optimizer.safetensors"))
            (staging / "optimizer.json").write_text(json.dumps(meta))
            (staging / "scheduler.json").write_text(json.dumps(self.scheduler.state_dict()))
            (staging / "trainer_state.json").write_text(json.dumps({
                "step": step, "total_steps": self.total_steps, "world_size": self.world,
                "config": asdict(self.config),
            }, indent=2))
        self.accelerator.wait_for_everyone()
        save_file({"torch": torch.get_rng_state()}, str(staging / f"rng-{self.rank}.safetensors"))
        (staging / f"rng-{self.rank}.json").write_text(json.dumps(random.getstate()))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            (staging / "COMPLETE").write_text(str(step))
            for f in staging.iterdir():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        steps = sorted(
            (int(m.group(1)), d) for d in self.checkpoint_dir.iterdir()
            if (m := CHECKPOINT_PATTERN.match(d.name))
        )
        for _, stale in steps[: max(0, len(steps) - self.config.keep_checkpoints)]:
            shutil.rmtree(stale, ignore_errors=True)

    def _load_latest_checkpoint(self) -> int:
        checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            return 0
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if state["world_size"] != self.world:
            raise ConfigError(
                f"checkpoint {checkpoint} was written by {state['world_size']} processes; "
                f"resume with the same number (now {self.world})"
            )
        model = self.accelerator.unwrap_model(self.model)
        weights = load_file(str(checkpoint / "trainable.safetensors"))
        params = dict(model.named_parameters())
        missing = set(weights) ^ {n for n, p in params.items() if p.requires_grad}
        if missing:
            raise ConfigError(
                f"checkpoint {checkpoint} does not match this model's trainable parameters "
                f"(e.g. {sorted(missing)[0]})"
            )
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        meta = json.loads((checkpoint / "optimizer.json").read_text())
        tensors = load_file(str(checkpoint / "optimizer.safetensors"))
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
        self.scheduler.load_state_dict(json.loads((checkpoint / "scheduler.json").read_text()))
        rng_file = checkpoint / f"rng-{self.rank}.safetensors"
        torch.set_rng_state(load_file(str(rng_file))["torch"])
        py_state = json.loads((checkpoint / f"rng-{self.rank}.json").read_text())
        random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
        return int(state["step"])


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict] = {}
    for index, slots in state_dict["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, slots in meta["plain"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}
