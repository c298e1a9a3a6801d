"""Where a QA set comes from: the built-in synthetic world, a TOFU-layout folder, a file, a
dataset on the Hugging Face hub, or `tofu` (TOFU's files: the folder ULDKIT_TOFU_DIR names,
else the `locuslab/TOFU` hub dataset)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from uldkit.data.types import Augmentation, QADataset
from uldkit.errors import DataError
from uldkit.io import is_local_path

SYNTHETIC = "synthetic"
TOFU = "tofu"
TOFU_HUB_ID = "locuslab/TOFU"
TOFU_DIR_ENV = "ULDKIT_TOFU_DIR"
BUILT_IN = (SYNTHETIC, TOFU)


def resolve_location(location: str) -> str:
    """`tofu` becomes the folder ULDKIT_TOFU_DIR names, else TOFU's hub id; others stay."""
    if location == TOFU:
        return os.environ.get(TOFU_DIR_ENV) or TOFU_HUB_ID
    return location


@dataclass(frozen=True)
class DataSource:
    """`location` is "synthetic", "tofu", a folder in the TOFU layout, a JSON/JSONL file, or
    a hub dataset id (owner/name)."""

    location: str = SYNTHETIC
    people: int = 40
    seed: int = 0
    holdout: int = 0  # synthetic world: held-out people (never trained on; in `texts()`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", resolve_location(str(self.location)))

    @property
    def is_synthetic(self) -> bool:
        return self.location == SYNTHETIC

    @property
    def is_hub(self) -> bool:
        """An `owner/name` that is not a local path: a dataset on the Hugging Face hub."""
        name = self.location
        return (not self.is_synthetic and not Path(name).exists() and not is_local_path(name)
                and name.count("/") == 1 and all(name.split("/")))

    def load(self, split: str) -> QADataset:
        from uldkit.data.tofu import load_tofu

        if self.is_synthetic:
            return _world(self.people, self.seed, self.holdout).split(split)
        if self.is_hub:
            from uldkit.data.hf import load_hub_split

            return load_hub_split(self.location, split)
        path = Path(self.location)
        if not path.exists():
            raise DataError(_not_found(self.location))
        return load_tofu(path, split)

    def load_many(self, splits: list[str]) -> QADataset:
        if not splits:
            raise DataError("no data split given")
        sets = [self.load(s) for s in splits]
        combined = sets[0]
        for other in sets[1:]:
            combined = combined + other
        return combined

    def augmentation(self, forget_split: str) -> Augmentation:
        from uldkit.data.tofu import load_tofu_augmentation

        if self.is_synthetic:
            return _world(self.people, self.seed, self.holdout).augmentation(forget_split)
        if self.is_hub:
            raise DataError(f"'{self.location}' is a hub dataset: the augmentation (aug/) that "
                            "ULD trains on comes with a local TOFU folder only; pass --data DIR")
        return load_tofu_augmentation(Path(self.location), forget_split)

    def texts(self) -> list[str]:
        """Everything a tokenizer trained for this source should cover."""
        if self.is_synthetic:
            return _world(self.people, self.seed, self.holdout).texts()
        texts: list[str] = []
        splits = ("forget10", "retain90", "retain_perturbed", "real_authors_perturbed",
                  "world_facts_perturbed", "general")
        if Path(self.location).is_file():
            splits = (Path(self.location).stem,)
        for split in splits:
            if not self.has_split(split):
                continue
            for pair in self.load(split):
                texts.extend([pair.question, pair.answer, *pair.perturbed_answers])
                texts.extend(t for t in (pair.paraphrased_answer, pair.paraphrased_question) if t)
        if not texts:
            raise DataError(f"no training text found in '{self.location}'")
        return texts

    def has_split(self, split: str) -> bool:
        """Whether the source holds `split`. For a folder, whether its file exists: a
        malformed file still counts, so that loading it names the fault instead of the
        split being skipped in silence."""
        path = Path(self.location)
        if not self.is_synthetic and path.is_dir():
            parts = ("forget10", "retain90") if split == "full" else (split,)
            return all(any((path / f"{part}{suffix}").is_file() for suffix in (".json", ".jsonl"))
                       for part in parts)
        try:
            self.load(split)
        except DataError:
            return False
        return True


def _not_found(location: str) -> str:
    if is_local_path(location) or "/" not in location:
        return (f"data path '{location}' does not exist (--data takes a folder, a file, a hub "
                f"dataset id or one of: {', '.join(BUILT_IN)})")
    return f"data path '{location}' does not exist and is not a hub dataset id (owner/name)"


@lru_cache(maxsize=4)
def _world(people: int, seed: int, holdout: int = 0):
    from uldkit.data.synthetic import generate_world

    return generate_world(n_people=people, seed=seed, n_holdout=holdout)
