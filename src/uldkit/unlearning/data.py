"""From what the user holds to what a method trains on: `DataSpec` -> `UnlearnData`.

The forget and retain sides may be named splits of a source ('synthetic', a folder in TOFU's
layout, a JSON/JSONL file), files (a `Path` to a JSON/JSONL file or a folder saved with
`datasets`), or in memory: a `QADataset`, a `datasets.Dataset`, a list of `QAPair`s or of
dicts with TOFU's field names. Passages (a MUSE-style document forget set) are a path or
"synthetic:<people split>", a `DocumentDataset`, a list of strings, or a `datasets.Dataset`
with a `text` column. Only this step reads files; a method receives the resulting
`UnlearnData` and trains.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uldkit.data.refusals import DEFAULT_REFUSALS, load_refusals
from uldkit.data.sources import DataSource
from uldkit.data.types import Augmentation, Document, DocumentDataset, QADataset, QAPair
from uldkit.errors import ConfigError, DataError
from uldkit.methods.base import UnlearnData, UnlearningMethod

# A QA set: a split name of `DataSpec.data`, a Path, or the set itself in memory.
QASpec = str | os.PathLike | QADataset | Sequence[QAPair] | Sequence[dict] | Any
# Passages: a path or "synthetic:<split>", or the passages in memory.
DocumentSpec = str | os.PathLike | DocumentDataset | Sequence[str] | Any


@dataclass
class DataSpec:
    """What to forget and what to keep, as the user holds it (see the module's docstring).

    `retain` None: the forget split's complement for a named split (forget10 -> retain90),
    none otherwise or with forget passages; "none": no retain QA. `augmentation` (ULD's
    paraphrases and wrong answers) is read from the source for a named split; give it for a
    forget set in memory. `refusals`: a file of refusal lines or the lines themselves;
    default TOFU's idontknow.jsonl beside the data, else built-in ones.
    """

    data: str = "synthetic"
    forget: QASpec = "forget10"
    retain: QASpec | None = None
    forget_documents: DocumentSpec | None = None
    retain_documents: DocumentSpec | None = None
    augmentation: Augmentation | None = None
    refusals: str | os.PathLike | Sequence[str] | None = None
    people: int = 40
    data_seed: int = 0
    max_length: int = 128

    def source(self) -> DataSource:
        return DataSource(self.data, people=self.people, seed=self.data_seed)


def resolve_unlearn_data(spec: DataSpec, method: type[UnlearningMethod]) -> UnlearnData:
    """Load and check everything `method` trains on: forget and retain sets, passages, and
    the augmentation or refusals the method needs."""
    source = spec.source()
    forget = qa_set(spec.forget, source, "forget")
    if len(forget) == 0:
        raise DataError(f"the forget set '{forget.name}' is empty")
    forget_documents = document_set(spec.forget_documents, spec, "forget_documents")
    retain_documents = document_set(spec.retain_documents, spec, "retain_documents")
    if forget_documents is None and retain_documents is not None:
        raise ConfigError("retain_documents needs forget_documents (a document forget set)")
    if forget_documents is not None and method.needs_refusals:
        raise ConfigError(f"method '{method.name}' cannot unlearn passages: it answers each "
                          "forget question with a refusal, and passages have no question")
    retain = _retain(spec, source, forget_documents is not None)
    overlap = forget.questions() & retain.questions()
    if overlap:
        warnings.warn(
            f"{len(overlap)} of {len(forget)} forget questions also appear in the retain set "
            f"'{retain.name}'; they are removed from the retain side",
            stacklevel=2,
        )
        retain = QADataset([p for p in retain if p.question not in overlap], retain.name)
    augmentation = None
    if method.needs_augmentation and forget_documents is None:
        augmentation = _augmentation(spec, source, method)
    return UnlearnData(
        forget=forget,
        retain=retain,
        augmentation=augmentation,
        refusals=_refusals(spec, source) if method.needs_refusals else [],
        max_length=spec.max_length,
        forget_documents=forget_documents,
        retain_documents=retain_documents,
    )


def qa_set(spec: QASpec, source: DataSource, role: str) -> QADataset:
    """One QA set from a split name of `source`, a path, or an in-memory set."""
    from uldkit.data.hf import from_hf_dataset
    from uldkit.data.records import qa_from_record
    from uldkit.data.tofu import load_tofu

    if isinstance(spec, QADataset):
        return spec
    if isinstance(spec, str):
        return source.load(spec)
    if isinstance(spec, os.PathLike):
        path = Path(spec)
        return from_hf_dataset(path) if path.is_dir() else load_tofu(path)
    if _is_hf_dataset(spec):
        return from_hf_dataset(spec, role)
    if isinstance(spec, Sequence):
        pairs = [item if isinstance(item, QAPair) else qa_from_record(item, f"{role} item {i}")
                 for i, item in enumerate(spec, start=1)]
        return QADataset(pairs, role)
    raise ConfigError(f"the {role} set must be a split name, a path, a QADataset, a "
                      f"datasets.Dataset or a list of QA pairs, not {type(spec).__name__}")


def document_set(spec: DocumentSpec | None, data: DataSpec, role: str) -> DocumentDataset | None:
    """Passages from a path or "synthetic:<split>", or in memory; None for None."""
    from uldkit.data.documents import resolve_documents
    from uldkit.data.synthetic import generate_world

    if spec is None:
        return None
    if isinstance(spec, DocumentDataset):
        documents = spec
    elif isinstance(spec, str | os.PathLike):
        world = (generate_world(data.people, data.data_seed)
                 if data.source().is_synthetic else None)
        documents = resolve_documents(os.fspath(spec), world)
    elif _is_hf_dataset(spec):
        if "text" not in spec.column_names:
            raise DataError(f"{role}: the dataset has no column 'text'")
        documents = DocumentDataset([Document(row["text"]) for row in spec], role)
    elif isinstance(spec, Sequence):
        documents = DocumentDataset(
            [item if isinstance(item, Document) else Document(_text(item, role, i))
             for i, item in enumerate(spec, start=1)], role)
    else:
        raise ConfigError(f"{role} must be a path, a DocumentDataset, a datasets.Dataset or a "
                          f"list of strings, not {type(spec).__name__}")
    if len(documents) == 0:
        raise DataError(f"{role} '{documents.name}' holds no passages")
    return documents


def _retain(spec: DataSpec, source: DataSource, forgets_documents: bool) -> QADataset:
    from uldkit.data.tofu import retain_split_for

    if isinstance(spec.retain, str) and spec.retain == "none":
        return QADataset([], "none")
    if spec.retain is not None:
        return qa_set(spec.retain, source, "retain")
    if forgets_documents or not isinstance(spec.forget, str):
        return QADataset([], "none")
    return source.load(retain_split_for(spec.forget))


def _augmentation(spec: DataSpec, source: DataSource,
                  method: type[UnlearningMethod]) -> Augmentation:
    if spec.augmentation is not None:
        return spec.augmentation
    if isinstance(spec.forget, str):
        return source.augmentation(spec.forget)
    raise ConfigError(f"method '{method.name}' needs the forget set's augmentation "
                      "(paraphrases and wrong answers): pass augmentation= with a forget set "
                      "in memory (an empty Augmentation() trains without)")


def _refusals(spec: DataSpec, source: DataSource) -> list[str]:
    if isinstance(spec.refusals, str | os.PathLike):
        if os.fspath(spec.refusals):
            return load_refusals(spec.refusals)
    elif spec.refusals is not None:
        return list(spec.refusals)
    if not source.is_synthetic and (Path(source.location) / "idontknow.jsonl").exists():
        return load_refusals(Path(source.location) / "idontknow.jsonl")
    return list(DEFAULT_REFUSALS)


def _is_hf_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("datasets") and hasattr(value, "column_names")


def _text(item: Any, role: str, index: int) -> str:
    if isinstance(item, dict):
        item = item.get("text")
    if not isinstance(item, str) or not item.strip():
        raise DataError(f"{role} item {index}: a passage must be a non-empty string")
    return item
