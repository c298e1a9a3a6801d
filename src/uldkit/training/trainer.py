"""The one training loop that fine-tuning and every unlearning method share.

A method supplies an `Objective`: how many units (tokens, samples) each loss term averages
over in a batch, and the summed loss of each term. The loop normalises every term by its
count over the whole optimizer step (all micro-batches, all processes), so one process with
batch 8 and two processes with batch 4 take the same step. It is built on 🤗 Accelerate:
`accelerate launch` or `torchrun` runs it on several processes unchanged.

Checkpoints hold the trainable weights, optimizer, scheduler, the fp16 loss scaler, every RNG
state (Python, NumPy, torch CPU and CUDA) and the data position in safetensors + JSON (no
pickle); file names are `run_dir.Checkpoint`'s. A checkpoint directory is complete once its
COMPLETE marker exists, and `resume=True` continues from the newest complete one, after
checking that it was trained with the same settings and data (`journal.check_identity`).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError, TrainingError
from uldkit.training.config import TrainConfig
from uldkit.training.journal import check_identity, data_sha256
from uldkit.training.progress import LoopProgress
from uldkit.training.run_dir import Checkpoint

Batch = dict[str, dict[str, torch.Tensor]]
# How a run is watched and kept, not what it computes: these may change on resume.
UNTRACKED_SETTINGS = ("show_progress", "description", "checkpoint_every", "keep_checkpoints")


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
        # Under fp16 the scaler skips a step whose gradients overflowed; so does the schedule.
        if not getattr(self.optimizer, "step_was_skipped", False):
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
        np.random.seed(seed)
        torch.manual_seed(seed)  # and every CUDA device's

    # ---- checkpoints --------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                if p.requires_grad}

    def identity(self) -> dict:
        """What the trained weights depend on: a checkpoint made otherwise is not resumed."""
        if not hasattr(self, "_data_sha256"):
            self._data_sha256 = data_sha256({
                "primary": self.data.primary, "aligned": list(self.data.aligned),
                "streams": {name: [[e.input_ids, e.labels] for e in examples]
                            for name, examples in sorted(self.data.streams.items())},
            })
        settings = {k: v for k, v in asdict(self.config).items() if k not in UNTRACKED_SETTINGS}
        return {**settings, "world_size": self.world, "data_sha256": self._data_sha256}

    def latest_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None or not self.checkpoint_dir.exists():
            return None
        complete = [
            (step, d) for d in self.checkpoint_dir.iterdir()
            if (step := Checkpoint.step_of(d)) is not None and Checkpoint(d).complete_marker.exists()
        ]
        return max(complete)[1] if complete else None

    def save_checkpoint(self, step: int) -> Path:
        assert self.checkpoint_dir is not None
        final = Checkpoint.final(self.checkpoint_dir, step)
        staging = Checkpoint.staging(self.checkpoint_dir, step)
        if self.accelerator.is_main_process:
            shutil.rmtree(staging.path, ignore_errors=True)
            staging.path.mkdir(parents=True)
            save_file(self.trainable_state(), str(staging.trainable))
            tensors, meta = _flatten_optimizer(self.optimizer.state_dict())
            save_file(tensors, str(staging.optimizer_tensors))
            staging.optimizer_meta.write_text(json.dumps(meta))
            staging.scheduler.write_text(json.dumps(self.scheduler.state_dict()))
            if self.accelerator.scaler is not None:
                staging.scaler.write_text(json.dumps(self.accelerator.scaler.state_dict()))
            staging.trainer_state.write_text(json.dumps({
                "step": step, "total_steps": self.total_steps, "world_size": self.world,
                "config": asdict(self.config), "identity": self.identity(),
            }, indent=2))
        self.accelerator.wait_for_everyone()
        save_file(_rng_tensors(), str(staging.rng_tensors(self.rank)))
        staging.rng_python(self.rank).write_text(json.dumps(random.getstate()))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            staging.complete_marker.write_text(str(step))
            for f in staging.path.iterdir():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
            shutil.rmtree(final.path, ignore_errors=True)
            os.replace(staging.path, final.path)
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return final.path

    def _prune_checkpoints(self) -> None:
        steps = sorted(
            (step, d) for d in self.checkpoint_dir.iterdir()
            if (step := Checkpoint.step_of(d)) is not None
        )
        for _, stale in steps[: max(0, len(steps) - self.config.keep_checkpoints)]:
            shutil.rmtree(stale, ignore_errors=True)

    def _load_latest_checkpoint(self) -> int:
        latest = self.latest_checkpoint()
        if latest is None:
            return 0
        checkpoint = Checkpoint(latest)
        state = json.loads(checkpoint.trainer_state.read_text())
        if state["world_size"] != self.world:
            raise ConfigError(
                f"checkpoint {latest} was written by {state['world_size']} processes; "
                f"resume with the same number (now {self.world})"
            )
        if "identity" in state:  # checkpoints of older versions recorded none
            check_identity(latest, state["identity"], self.identity())
        model = self.accelerator.unwrap_model(self.model)
        weights = load_file(str(checkpoint.trainable))
        params = dict(model.named_parameters())
        missing = set(weights) ^ {n for n, p in params.items() if p.requires_grad}
        if missing:
            raise ConfigError(
                f"checkpoint {latest} does not match this model's trainable parameters "
                f"(e.g. {sorted(missing)[0]})"
            )
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        meta = json.loads(checkpoint.optimizer_meta.read_text())
        tensors = load_file(str(checkpoint.optimizer_tensors))
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
        self.scheduler.load_state_dict(json.loads(checkpoint.scheduler.read_text()))
        if self.accelerator.scaler is not None and checkpoint.scaler.exists():
            self.accelerator.scaler.load_state_dict(json.loads(checkpoint.scaler.read_text()))
        _restore_rng(load_file(str(checkpoint.rng_tensors(self.rank))))
        py_state = json.loads(checkpoint.rng_python(self.rank).read_text())
        random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
        return int(state["step"])


def _rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch (CPU, every CUDA device) and NumPy RNG states, as tensors."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = state
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    assert kind == "MT19937"
    tensors["numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    tensors["numpy.position"] = torch.tensor([position, has_gauss], dtype=torch.int64)
    tensors["numpy.gauss"] = torch.tensor([gauss], dtype=torch.float64)
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Set what `_rng_tensors` saved (checkpoints of older versions hold only "torch")."""
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            if f"cuda.{device}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{device}"], device)
    if "numpy.keys" in tensors:
        position, has_gauss = tensors["numpy.position"].tolist()
        np.random.set_state(("MT19937", tensors["numpy.keys"].numpy().astype(np.uint32),
                             position, has_gauss, float(tensors["numpy.gauss"][0])))


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
