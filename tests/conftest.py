"""Shared fixtures: a tiny target and retain model, really trained, once per test session."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from uldkit.data.sources import DataSource
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A small world: 20 people (forget10 = 2 people, 20 questions) plus 60 general facts.
TEST_PEOPLE = 20


@dataclass(frozen=True)
class TrainedWorld:
    source: DataSource
    target: Path  # fine-tuned on full + general
    retain: Path  # fine-tuned on retain90 + general

    @property
    def people(self) -> int:
        return self.source.people


def _finetune(out: Path, splits: list[str]) -> Path:
    if (out / "train_summary.json").exists():  # a kept copy (ULDKIT_TEST_MODELS)
        return out
    # Trained beside `out` and renamed into place, so test runs sharing ULDKIT_TEST_MODELS
    # never see (or delete) each other's half-trained model.
    building = out.with_name(f"{out.name}.building-{os.getpid()}")
    finetune(FinetuneConfig(
        out=str(building), splits=splits, people=TEST_PEOPLE, size="tiny", vocab_size=768,
        train=TrainConfig(epochs=25, batch_size=16, lr=3e-3, warmup_ratio=0.05,
                          show_progress=False),
    ), overwrite=True)
    if out.exists() and not (out / "train_summary.json").exists():
        shutil.rmtree(out)  # left half-trained by an interrupted run
    try:
        building.rename(out)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(building, ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: its many small steps lose a lot to a second thread on a
    busy machine. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> TrainedWorld:
    """Target and retain models that have memorised their training answers."""
    # ULDKIT_TEST_MODELS=DIR keeps the two models between test runs (for development).
    kept = os.environ.get("ULDKIT_TEST_MODELS")
    root = Path(kept) if kept else tmp_path_factory.mktemp("trained_world")
    return TrainedWorld(
        source=DataSource("synthetic", people=TEST_PEOPLE),
        target=_finetune(root / "target", ["full"]),
        retain=_finetune(root / "retain", ["retain90"]),
    )


@pytest.fixture(scope="session")
def grad_ascent_model(trained_world: TrainedWorld, tmp_path_factory) -> Path:
    """The trained target after gradient ascent on forget10 (the attacks' weight-edited
    model); trained once for the session, read only by the tests that take it."""
    from uldkit.unlearning.run import UnlearnConfig, unlearn

    out = tmp_path_factory.mktemp("attacked") / "grad_ascent"
    unlearn(UnlearnConfig(method="grad_ascent", model=str(trained_world.target), out=str(out),
                          people=trained_world.people, forget="forget10",
                          train_overrides={"batch_size": 4, "grad_accum": 1, "warmup_ratio": 0.0,
                                           "lr": 1e-3, "epochs": 3}), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    return Path(os.environ.get("ULDKIT_TOFU_DIR", Path(__file__).parents[2] / "shared/data/tofu"))
