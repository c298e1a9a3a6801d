"""`uldkit demo --benchmark tofu-real`: the demo's stages on the real TOFU files.

The run's data is a folder in TOFU's layout written into the run directory (`data/`), so
fine-tuning, unlearning and evaluation read it as they read TOFU itself:

- the forget split as released (forget10: 20 authors, 400 pairs), or its first authors;
- the retain split cut to its first `retain_authors` authors. TOFU's rows come 20 to an
  author, and retain_perturbed.json (the retain-side evaluation set) is the first 400 rows
  of retain90: its 20 authors are the CPU subset's retain authors, so every retain-side
  figure is computed on authors both models trained on, as in TOFU;
- retain_perturbed, real_authors_perturbed, world_facts_perturbed as released (retain
  rows only for the retain authors kept), with their perturbed answers: TOFU's evaluation;
- `general`: the real-author and world-fact questions with their answers, trained into the
  target and the retain model. A model trained from scratch knows nothing of the world:
  this stands in for the pre-training that gives TOFU's Llama-2 its utility-set knowledge
  (as the synthetic world's general facts do); perturbed answers are never trained on;
- the ULD augmentation (aug/) and TOFU's refusals, copied.

The MIA audit's non-members are `holdout` retain authors after the kept ones: TOFU authors
neither model trained on, written to `data/mia_holdout.json`. `--full` keeps every retain
author, so none are left to hold out and the audit is skipped.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uldkit.data.records import read_located_records
from uldkit.data.sources import TOFU_DIR_ENV, DataSource
from uldkit.data.tofu import load_tofu, retain_split_for
from uldkit.demo.settings import checked_training, unlearn_settings
from uldkit.demo.stages import MiaTexts, pair_mia_texts
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json

AUTHOR_PAIRS = 20  # TOFU: 20 QA pairs per author, an author's rows together
TOFU_AUTHORS = 200
CPU_RETAIN_AUTHORS = 20  # retain_perturbed.json's authors: the first 20 of retain90
CPU_HOLDOUT_AUTHORS = 10
UTILITY_SPLITS = ("real_authors_perturbed", "world_facts_perturbed")
# The held-out authors' QA pairs, written beside the run's data: the MIA audit's
# non-members (`uldkit calibrate --holdout-data`).
HOLDOUT_FILE = "mia_holdout.json"
# TOFU's answers run to 250 tokens with question and prompt (a 1,024-token vocabulary
# trained on TOFU): 256 keeps every pair whole.
MAX_LENGTH = 256


@dataclass(frozen=True)
class TofuRealInputs:
    """What the demo's QA flow needs: the data folder, the MIA texts (None: no held-out
    authors), and the authors trained on."""

    source: DataSource
    mia_texts: MiaTexts | None
    forget_authors: int
    retain_authors: int


def tofu_root(data: str | None) -> Path:
    """The folder holding TOFU's files: `data`, else ULDKIT_TOFU_DIR."""
    location = data or os.environ.get(TOFU_DIR_ENV)
    if not location:
        raise ConfigError(f"--benchmark tofu-real needs TOFU's files: pass --data DIR or set "
                          f"{TOFU_DIR_ENV}")
    root = Path(location)
    if not (root / "retain_perturbed.json").is_file():
        raise ConfigError(f"'{location}' is not a TOFU folder (no retain_perturbed.json)")
    return root


def prepare_tofu_real(root: Path, out: Path, forget: str, retain_authors: int | None,
                      holdout_authors: int, forget_authors: int | None = None,
                      utility_rows: int | None = None) -> TofuRealInputs:
    """Write the run's TOFU-layout folder under out/data and return the demo's inputs.

    `retain_authors` None keeps every retain author (full TOFU); `forget_authors` None
    the whole forget split; `utility_rows` None every real-author and world-fact row."""
    retain_split = retain_split_for(forget)
    forget_rows = _rows(root, forget)
    retain_rows = _rows(root, retain_split)
    kept = _kept_authors(retain_split, len(retain_rows), retain_authors, holdout_authors)
    if forget_authors is not None:
        forget_rows = forget_rows[:forget_authors * AUTHOR_PAIRS]
    data_dir = out / "data"
    kept_rows = retain_rows[:kept * AUTHOR_PAIRS]
    kept_questions = {row["question"] for row in kept_rows}
    evaluated = [row for row in _rows(root, "retain_perturbed")
                 if row["question"] in kept_questions]
    if not evaluated:
        raise ConfigError("none of the kept retain authors is in retain_perturbed.json")
    utility = {split: _rows(root, split)[:utility_rows] for split in UTILITY_SPLITS}
    files: dict[str, list[dict[str, Any]]] = {
        forget: forget_rows, retain_split: kept_rows, "retain_perturbed": evaluated, **utility,
        "general": [{"question": row["question"], "answer": row["answer"]}
                    for rows in utility.values() for row in rows],
    }
    for split, rows in files.items():
        atomic_write_json(data_dir / f"{split}.json", rows)
    for name in ("paraphrase_res.csv", "perturb_res.csv"):
        _copy(root / "aug" / forget / name, data_dir / "aug" / forget / name)
    _copy(root / "idontknow.jsonl", data_dir / "idontknow.jsonl")
    holdout = retain_rows[kept * AUTHOR_PAIRS:(kept + holdout_authors) * AUTHOR_PAIRS]
    if holdout:
        atomic_write_json(data_dir / HOLDOUT_FILE, holdout)
    source = DataSource(str(data_dir))
    return TofuRealInputs(
        source=source, mia_texts=_mia_texts(source, forget, data_dir, holdout_authors),
        forget_authors=len(forget_rows) // AUTHOR_PAIRS, retain_authors=kept)


def check_author_counts(root: Path, forget: str, retain_authors: int | None,
                        holdout_authors: int) -> None:
    """ConfigError unless the retain split has the authors to keep and to hold out."""
    retain_split = retain_split_for(forget)
    _kept_authors(retain_split, len(_rows(root, retain_split)), retain_authors, holdout_authors)


def _kept_authors(retain_split: str, rows: int, retain_authors: int | None,
                  holdout_authors: int) -> int:
    available = rows // AUTHOR_PAIRS
    kept = available if retain_authors is None else retain_authors
    if kept < 1 or kept + holdout_authors > available:
        raise ConfigError(f"{retain_split} has {available} authors: cannot keep {kept} and hold "
                          f"out {holdout_authors} more")
    return kept


def _mia_texts(source: DataSource, forget: str, data_dir: Path,
               authors: int) -> MiaTexts | None:
    if not (data_dir / HOLDOUT_FILE).is_file():
        return None
    return pair_mia_texts(source.load(forget), load_tofu(data_dir / HOLDOUT_FILE),
                          f"of TOFU retain authors neither model trained on ({authors})")


def _rows(root: Path, split: str) -> list[dict[str, Any]]:
    load_tofu(root, split)  # checks the file's records, naming any fault
    path = next(root / f"{split}{suffix}" for suffix in (".json", ".jsonl")
                if (root / f"{split}{suffix}").is_file())
    return [record for _, record in read_located_records(path)]


def _copy(source: Path, destination: Path) -> None:
    if source.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)


# Fine-tuning per size: as the synthetic demo's (measured cost and memorisation in the
# README's "Real TOFU on a CPU").
TOFU_REAL_FINETUNE_SETTINGS = {
    "tiny": checked_training(dict(epochs=30, lr=3e-3, batch_size=16)),
    "small": checked_training(dict(epochs=30, lr=2e-3, batch_size=16)),
}
# The synthetic demo's forget10 has 40 pairs, TOFU's 400: each method keeps its demo
# learning rate and batch and runs about as many optimizer steps (epochs / 10, at least
# one). ULD trains on the augmentation instead (about 25 paraphrased and wrong answers per
# forget question on TOFU, 3 in the synthetic world): one epoch, 1,263 steps on forget10,
# already 4x the synthetic demo's 300. Not tuned on TOFU.
_SYNTHETIC_FORGET_PAIRS = 40
_EPOCHS = {"uld": 1}


def tofu_real_unlearn_settings(method: str, target_dir: Path,
                               forget_pairs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training overrides) the tofu-real demo uses for `method`."""
    params, train = unlearn_settings(method, target_dir)
    if method in _EPOCHS:
        train["epochs"] = _EPOCHS[method]
    elif "epochs" in train:
        scaled = train["epochs"] * _SYNTHETIC_FORGET_PAIRS / max(forget_pairs, 1)
        train["epochs"] = max(1, round(scaled))
    return params, train
