"""Plain-text passages: loading them, cutting them into token windows, and MUSE-style splits.

Documents come from a folder of `.txt` files, a JSON list / JSONL file of records with a
`text` field, a single `.txt` file, or a folder saved with `datasets`' `save_to_disk`.
For training, each document is tokenized (followed by EOS, which marks its end) and cut into
windows; each window is scored on every token but the leading special tokens (BOS), so the
ordinary next-token objective trains on passages unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.data.limits import check_field_length
from uldkit.data.records import read_located_records, read_text
from uldkit.data.synthetic import SyntheticWorld
from uldkit.data.tofu import retain_split_for
from uldkit.data.types import Document, DocumentDataset, QADataset, QAPair
from uldkit.errors import ConfigError, DataError

SYNTHETIC_PREFIX = "synthetic:"
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_PERSON_SPLITS = ("forget01", "forget05", "forget10", "retain90", "retain95", "retain99", "full")


def load_documents(path: str | os.PathLike) -> DocumentDataset:
    """Documents from a folder of .txt files (sorted by name), a .txt file, a JSON/JSONL file
    of records with a `text` field (optional `source`), or a saved `datasets` folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"documents not found: {path}")
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASET_MARKERS):
            return _from_saved_dataset(path)
        return _from_text_folder(path)
    if path.suffix.lower() == ".txt":
        return DocumentDataset([_text_file_document(path)], path.stem)
    return _from_records(path)


def document_texts(documents: Iterable[Document]) -> list[str]:
    return [document.text for document in documents]


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer puts in front of any text by itself (usually just BOS)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def chunk_documents(
    tokenizer: PreTrainedTokenizerBase,
    docs: Iterable[Document | str],
    max_tokens: int,
    stride: int | None = None,
) -> list[list[int]]:
    """Token windows of at most `max_tokens` ids over each document's text + EOS.

    Windows start every `stride` tokens (default `max_tokens`: no overlap) and stop once one
    reaches the document's end; no window spans two documents. No special token is added
    in front (see `encode_document_chunks`).
    """
    stride = max_tokens if stride is None else stride
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 1 <= stride <= max_tokens:
        raise ConfigError(f"stride must be from 1 to max_tokens ({max_tokens}), got {stride}")
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    chunks: list[list[int]] = []
    for doc in docs:
        text = doc.text if isinstance(doc, Document) else doc
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        start = 0
        while ids:
            chunks.append(ids[start:start + max_tokens])
            if start + max_tokens >= len(ids):
                break
            start += stride
    return chunks


def encode_document_chunks(
    tokenizer: PreTrainedTokenizerBase,
    docs: Iterable[Document | str],
    max_tokens: int,
    stride: int | None = None,
) -> list[Encoded]:
    """Training examples of at most `max_tokens` ids: leading specials (BOS) + one window;
    every window token is a label."""
    prefix = leading_special_ids(tokenizer)
    room = max_tokens - len(prefix)
    if room < 1:
        raise ConfigError(f"max_tokens {max_tokens} leaves no room after the special tokens")
    chunk_stride = None if stride is None else min(stride, room)
    return [
        Encoded(input_ids=prefix + chunk, labels=[IGNORE_INDEX] * len(prefix) + chunk)
        for chunk in chunk_documents(tokenizer, docs, room, chunk_stride)
    ]


# --- the synthetic world as a document corpus ------------------------------------------------
@dataclass(frozen=True)
class DocumentSplits:
    """A MUSE-style corpus: forget and retain passages, never-trained holdout passages, and
    QA pairs about the forget and retain passages (for KnowMem), with MUSE's in-context
    examples for each when there are some."""

    forget: DocumentDataset
    retain: DocumentDataset
    holdout: DocumentDataset
    forget_qa: QADataset
    retain_qa: QADataset
    forget_qa_icl: tuple[QAPair, ...] = ()
    retain_qa_icl: tuple[QAPair, ...] = ()


def synthetic_document_splits(
    world: SyntheticWorld, forget_split: str = "forget10", retain_qa: str = "retain_perturbed"
) -> DocumentSplits:
    """Biographies of the forget people, of the retain people and of the held-out people
    (`generate_world(..., n_holdout=N)`); the QA pairs of the forget people, and for retain
    knowledge the `retain_qa` split (default: TOFU's sample of 40 retain pairs, spread evenly
    over the retain people; "retain90" etc. for all of them)."""
    if not world.holdout:
        raise ConfigError(
            "the synthetic world has no held-out people: generate it with n_holdout > 0 "
            "(fine-tune with holdout_people > 0 so the tokenizer covers them)"
        )
    retain_split = retain_split_for(forget_split)
    return DocumentSplits(
        forget=biographies_of(world, forget_split),
        retain=biographies_of(world, retain_split),
        holdout=world.holdout_biographies(),
        forget_qa=world.split(forget_split),
        retain_qa=world.split(retain_qa),
    )


def biographies_of(world: SyntheticWorld, split: str) -> DocumentDataset:
    """The biographies of the people in a people split (forget10, retain90, full, ...)."""
    if split not in _PERSON_SPLITS:
        raise DataError(
            f"'{split}' is not a split of people (known: {', '.join(_PERSON_SPLITS)})"
        )
    subjects = {pair.subject for pair in world.split(split)}
    documents = [d for d in world.biographies() if d.source in subjects]
    return DocumentDataset(documents, f"{split}_biographies")


def resolve_documents(
    spec: str, world: SyntheticWorld | None = None
) -> DocumentDataset:
    """`synthetic:biographies` (every person of the world), `synthetic:<people split>`
    (e.g. synthetic:retain90), or a path for `load_documents`."""
    if not spec.startswith(SYNTHETIC_PREFIX):
        return load_documents(spec)
    if world is None:
        raise ConfigError(f"documents '{spec}' need the synthetic world (data 'synthetic')")
    name = spec[len(SYNTHETIC_PREFIX):]
    if name == "biographies":
        return world.biographies()
    if name in _PERSON_SPLITS:
        return biographies_of(world, name)
    raise ConfigError(
        f"unknown synthetic documents '{spec}' (known: synthetic:biographies, "
        + ", ".join(f"synthetic:{s}" for s in _PERSON_SPLITS) + ")"
    )


# --- readers ----------------------------------------------------------------------------------
def _text_file_document(path: Path) -> Document:
    text = check_field_length(read_text(path), "text", str(path), document=True)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return Document(text, path.name)


def _from_text_folder(path: Path) -> DocumentDataset:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise DataError(f"{path}: no .txt files (and not a saved `datasets` folder)")
    return DocumentDataset([_text_file_document(file) for file in files], path.name)


def _from_records(path: Path) -> DocumentDataset:
    documents = []
    for where, record in read_located_records(path):
        text = record.get("text")
        if text is None:
            raise DataError(f"{where}: missing field 'text'")
        if not isinstance(text, str):
            raise DataError(f"{where}: field 'text' must be a string")
        check_field_length(text, "text", where, document=True)
        if not text.strip():
            raise DataError(f"{where}: field 'text' is empty")
        source = record.get("source")
        if source is not None and not isinstance(source, str):
            raise DataError(f"{where}: field 'source' must be a string")
        documents.append(Document(text, source if source is not None else where))
    if not documents:
        raise DataError(f"{path}: no documents")
    return DocumentDataset(documents, path.stem)


def _from_saved_dataset(path: Path) -> DocumentDataset:
    from uldkit.data.hf import _import_datasets, _pick_split

    datasets = _import_datasets()
    try:
        dataset = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({err})") from None
    if isinstance(dataset, datasets.DatasetDict):
        dataset = _pick_split(dataset, "train" if "train" in dataset else None)
    if "text" not in dataset.column_names:
        raise DataError(
            f"{path}: dataset has no column 'text' (columns: {', '.join(dataset.column_names)})"
        )
    has_source = "source" in dataset.column_names
    documents = []
    for row_number, row in enumerate(dataset, start=1):
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path} row {row_number}: field 'text' is empty or not a string")
        check_field_length(text, "text", f"{path} row {row_number}", document=True)
        source = row["source"] if has_source and isinstance(row["source"], str) else None
        documents.append(Document(text, source or f"{path.name} row {row_number}"))
    if not documents:
        raise DataError(f"{path}: the dataset has no rows")
    return DocumentDataset(documents, path.name)

