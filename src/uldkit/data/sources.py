"""Where a QA set comes from: the built-in synthetic world, a TOFU-layout folder, or a file."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from uldkit.data.types import Augmentation, QADataset
from uldkit.errors import DataError

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DataSource:
    """`location` is "synthetic", a folder in the TOFU layout, or a JSON/JSONL file."""

    location: str = SYNTHETIC
    people: int = 40
    seed: int = 0
    holdout: int = 0  # synthetic world: held-out people (never trained on; in `texts()`)

    @property
    def is_synthetic(self) -> bool:
        return self.location == SYNTHETIC

    def load(self, split: str) -> QADataset:
        from uldkit.data.tofu import load_tofu

        if self.is_synthetic:
            return _world(self.people, self.seed, self.holdout).split(split)
        path = Path(self.location)
        if path.is_file():
            return load_tofu(path, split)
        if not path.exists():
            raise DataError(f"data path '{path}' does not exist")
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


@lru_cache(maxsize=4)
def _world(people: int, seed: int, holdout: int = 0):
    from uldkit.data.synthetic import generate_world

    return generate_world(n_people=people, seed=seed, n_holdout=holdout)
