"""QA pairs from a Hugging Face `datasets` object or a directory saved with `save_to_disk`.

`datasets` is optional: it is imported only here, when asked for.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from uldkit.data.records import qa_from_record
from uldkit.data.types import QADataset
from uldkit.errors import DataError, import_optional


def from_hf_dataset(ds_or_path: Any, split: str | None = None) -> QADataset:
    """Convert a `Dataset`, a `DatasetDict` (pick `split`) or a saved directory to QA pairs.

    Columns use TOFU's names (question, answer, paraphrased_answer, perturbed_answer, ...).
    """
    datasets = _import_datasets()
    name = split or "hf"
    if isinstance(ds_or_path, str | os.PathLike):
        path = Path(ds_or_path)
        if not path.is_dir():
            raise DataError(f"saved dataset not found: {path} is not a directory")
        try:
            ds_or_path = datasets.load_from_disk(str(path))
        except (OSError, ValueError) as err:  # missing or corrupt files; pyarrow errors too
            raise DataError(f"{path}: not a dataset saved with save_to_disk ({err})") from None
        name = split or path.name
    if isinstance(ds_or_path, datasets.DatasetDict):
        ds_or_path = _pick_split(ds_or_path, split)
    if not isinstance(ds_or_path, datasets.Dataset):
        raise DataError(
            "expected a datasets.Dataset, a datasets.DatasetDict or a directory saved with "
            f"save_to_disk, got {type(ds_or_path).__name__}"
        )
    missing = [c for c in ("question", "answer") if c not in ds_or_path.column_names]
    if missing:
        raise DataError(
            f"dataset '{name}' has no column '{missing[0]}' "
            f"(columns: {', '.join(ds_or_path.column_names) or 'none'})"
        )
    pairs = [
        qa_from_record(row, f"dataset '{name}' row {index}")
        for index, row in enumerate(ds_or_path, start=1)
    ]
    if not pairs:
        raise DataError(f"dataset '{name}' has no rows")
    return QADataset(pairs, name)


def _pick_split(dataset_dict: Any, split: str | None) -> Any:
    known = list(dataset_dict.keys())
    if split is None:
        if len(known) == 1:
            return dataset_dict[known[0]]
        raise DataError(f"the DatasetDict has several splits: name one ({', '.join(known)})")
    if split not in dataset_dict:
        raise DataError(f"no split '{split}' in the DatasetDict (splits: {', '.join(known)})")
    return dataset_dict[split]


def _import_datasets() -> Any:
    return import_optional("datasets", "datasets", "reading Hugging Face datasets")


def load_hub_split(repo_id: str, split: str) -> QADataset:
    """One split of a QA dataset on the Hugging Face hub, named as a config of it (TOFU's
    layout: `locuslab/TOFU` has configs forget10, retain90, ...); `full` = forget10 + retain90."""
    if split == "full":
        return QADataset((load_hub_split(repo_id, "forget10")
                          + load_hub_split(repo_id, "retain90")).pairs, "full")
    datasets = _import_datasets()
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would break the one-line error
    try:
        loaded = datasets.load_dataset(repo_id, split)
    except Exception as err:  # network, unknown id or config: the datasets library's many kinds
        text = str(err).strip().splitlines()
        raise DataError(f"'{repo_id}' is not a local folder or file, and split '{split}' of "
                        f"the hub dataset '{repo_id}' could not be loaded: "
                        f"{text[0] if text else type(err).__name__}") from None
    finally:
        hub_log.setLevel(level)
    return QADataset(from_hf_dataset(loaded).pairs, split)
