"""Document data: loading passages, cutting them into training windows, MUSE-style splits."""

from __future__ import annotations

import json

import pytest

from uldkit.data.collate import collate
from uldkit.data.documents import (
    chunk_documents,
    encode_document_chunks,
    load_documents,
    resolve_documents,
    synthetic_document_splits,
)
from uldkit.data.formatting import IGNORE_INDEX
from uldkit.data.sources import DataSource
from uldkit.data.synthetic import generate_world
from uldkit.data.types import Document
from uldkit.errors import ConfigError, DataError
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.training.trainer import answer_token_count


@pytest.fixture(scope="module")
def world():
    return generate_world(20, seed=4, n_holdout=5)


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_bpe_tokenizer(world.texts(), vocab_size=500)


# --- loading ------------------------------------------------------------------------------------
def test_text_folder_is_read_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("Second passage.", encoding="utf-8")
    (tmp_path / "a.txt").write_text("First passage.", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a document", encoding="utf-8")
    docs = load_documents(tmp_path)
    assert [(d.text, d.source) for d in docs] == [("First passage.", "a.txt"),
                                                  ("Second passage.", "b.txt")]
    single = load_documents(tmp_path / "a.txt")
    assert [d.text for d in single] == ["First passage."]


def test_text_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no .txt files"):
        load_documents(tmp_path)
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        load_documents(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_documents(tmp_path / "missing")


def test_jsonl_and_json_records(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "One.", "source": "s1"}\n\n{"text": "Two."}\n', encoding="utf-8")
    docs = load_documents(jsonl)
    assert [(d.text, d.source) for d in docs] == [("One.", "s1"), ("Two.", f"{jsonl} line 3")]
    listed = tmp_path / "docs.json"
    listed.write_text(json.dumps([{"text": "A."}, {"text": "B."}]), encoding="utf-8")
    assert [d.text for d in load_documents(listed)] == ["A.", "B."]


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "ok"}\n{"body": "x"}\n', "line 2: missing field 'text'"),
    ('{"text": "ok"}\n{"text": 3}\n', "line 2: field 'text' must be a string"),
    ('{"text": " "}\n', "line 1: field 'text' is empty"),
    ('{"text": "ok", "source": 1}\n', "line 1: field 'source' must be a string"),
    ('{"text": "ok"}\n{"text": \n', "line 2: invalid JSON"),
])
def test_record_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_documents(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_saved_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["Alpha.", "Beta."]}).save_to_disk(tmp_path / "ds")
    docs = load_documents(tmp_path / "ds")
    assert [d.text for d in docs] == ["Alpha.", "Beta."]
    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(tmp_path / "bad")
    with pytest.raises(DataError, match="no column 'text'.*body"):
        load_documents(tmp_path / "bad")


# --- chunking -----------------------------------------------------------------------------------
def test_windows_cover_each_document_and_never_span_two(tokenizer):
    texts = ["Tresk is the capital of Alumbria and the Veln flows through it.", "Calda."]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
           for t in texts]
    chunks = chunk_documents(tokenizer, [Document(texts[0]), texts[1]], max_tokens=5)
    first = -(-len(ids[0]) // 5)  # windows of the first document
    assert sum(chunks[:first], []) == ids[0] and sum(chunks[first:], []) == ids[1]
    assert all(len(c) <= 5 for c in chunks)
    overlapping = chunk_documents(tokenizer, [texts[0]], max_tokens=6, stride=3)
    assert overlapping[0] == ids[0][:6] and overlapping[1] == ids[0][3:9]
    assert overlapping[-1][-1] == tokenizer.eos_token_id
    with pytest.raises(ConfigError):
        chunk_documents(tokenizer, texts, max_tokens=4, stride=5)


def test_encoded_chunks_score_every_token_but_bos(tokenizer, world):
    encoded = encode_document_chunks(tokenizer, world.biographies()[:3], max_tokens=32)
    for example in encoded:
        assert len(example.input_ids) <= 32
        assert example.input_ids[0] == tokenizer.bos_token_id
        assert example.labels == [IGNORE_INDEX] + example.input_ids[1:]
    batch = collate(encoded, tokenizer.pad_token_id)
    assert answer_token_count(batch) == sum(len(e.input_ids) - 1 for e in encoded)


# --- the synthetic world ------------------------------------------------------------------------
def test_holdout_people_extend_a_world_without_changing_it():
    plain, extended = generate_world(20, seed=4), generate_world(20, seed=4, n_holdout=5)
    assert plain.people == extended.people and plain.split("full") == extended.split("full")
    assert generate_world(20, seed=4, n_holdout=2).holdout == extended.holdout[:2]
    names = {p.name for p in extended.people}
    assert len({p.name for p in extended.holdout} - names) == 5
    bios = [d.text for d in extended.holdout_biographies()]
    assert set(bios) <= set(extended.texts()) and not set(bios) & set(plain.texts())
    with pytest.raises(ConfigError):
        generate_world(250, n_holdout=51)
    source = DataSource("synthetic", people=20, seed=4, holdout=5)
    assert set(bios) <= set(source.texts())


def test_synthetic_document_splits(world):
    splits = synthetic_document_splits(world, "forget10")
    forget_people = {p.name for p in world.forget_people("forget10")}
    assert {d.source for d in splits.forget} == forget_people and len(splits.forget) == 2
    assert len(splits.retain) == 18 and len(splits.holdout) == 5
    assert not {d.source for d in splits.holdout} & {p.name for p in world.people}
    assert {p.subject for p in splits.forget_qa} == forget_people
    assert not {p.subject for p in splits.retain_qa} & forget_people
    with pytest.raises(ConfigError, match="no held-out people"):
        synthetic_document_splits(generate_world(20, seed=4))


def test_document_specs(world, tmp_path):
    assert len(resolve_documents("synthetic:biographies", world)) == 20
    assert len(resolve_documents("synthetic:retain90", world)) == 18
    with pytest.raises(ConfigError, match="unknown synthetic documents"):
        resolve_documents("synthetic:holdout", world)
    (tmp_path / "a.txt").write_text("Some text.", encoding="utf-8")
    assert [d.text for d in resolve_documents(str(tmp_path))] == ["Some text."]
