"""Property-based fuzzing of everything that reads user files, and of the collator.

Property of every loader: any input either loads (and what it returns is well-formed) or
raises a `UldkitError` subclass with a one-line message; never another exception. The
collator keeps its invariants for any batch, and refuses malformed batches with our errors.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uldkit.data.collate import collate
from uldkit.data.documents import encode_document_chunks, load_documents
from uldkit.data.formatting import IGNORE_INDEX, Encoded, encode_qa
from uldkit.data.tofu import load_tofu, load_tofu_augmentation
from uldkit.data.types import Augmentation, DocumentDataset, QADataset
from uldkit.errors import UldkitError
from uldkit.eval.tofu_log import SET_KEYS, load_tofu_log
from uldkit.eval.tofu_metrics import aggregate_tofu
from uldkit.models.tokenizer import train_bpe_tokenizer

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- building blocks ---------------------------------------------------------------------------
_text = st.text(max_size=12)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text
_json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=10,
)
_qa_fields = ["question", "answer", "paraphrased_answer", "perturbed_answer",
              "perturbed_answers", "paraphrased_question", "subject", "text", "source"]
_field_values = st.one_of(_json_values, st.text(min_size=1, max_size=20),
                          st.lists(st.text(max_size=10), max_size=4))
_records = st.dictionaries(st.sampled_from(_qa_fields), _field_values, max_size=7)
_good_qa = st.fixed_dictionaries(
    {"question": st.text(min_size=1, max_size=20), "answer": st.text(min_size=1, max_size=20)},
    optional={"perturbed_answer": st.lists(st.text(min_size=1, max_size=8), max_size=3),
              "paraphrased_answer": st.text(min_size=1, max_size=8)},
)


def _document_text(records: list, layout: str) -> str:
    if layout == "json":
        return json.dumps(records)
    return "\n".join(json.dumps(r) for r in records)


def _corrupt(data: bytes, cut: int, junk: bytes) -> bytes:
    """Truncate at `cut` (if inside) and splice `junk` there: torn writes, bad bytes."""
    cut = min(cut, len(data))
    return data[:cut] + junk


_junk = st.binary(max_size=6) | st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\n{", b"]", b","])
_structured = st.one_of(
    st.tuples(st.lists(_records | _good_qa, max_size=4), st.sampled_from(["json", "jsonl"]))
    .map(lambda t: _document_text(*t).encode("utf-8", "surrogatepass")),
    st.binary(max_size=120),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_file_bytes = st.one_of(
    _structured,
    st.tuples(_structured, st.integers(0, 200), _junk).map(lambda t: _corrupt(*t)),
)


def _assert_one_line_error(err: UldkitError) -> None:
    message = str(err)
    assert message.strip() and "\n" not in message and "Traceback" not in message


def _tmp() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="uldkit_fuzz_")


# --- QA files (JSON list / JSONL) ---------------------------------------------------------------
@FUZZ
@given(content=_file_bytes, suffix=st.sampled_from([".json", ".jsonl"]))
def test_qa_file_loads_or_raises_our_error(content, suffix):
    with _tmp() as directory:
        path = Path(directory) / f"forget10{suffix}"
        path.write_bytes(content)
        try:
            data = load_tofu(path)
        except UldkitError as err:
            _assert_one_line_error(err)
            assert str(path) in str(err)
            return
    assert isinstance(data, QADataset) and len(data) > 0
    for pair in data:
        assert pair.question.strip() and pair.answer.strip()
        assert all(isinstance(a, str) and a.strip() for a in pair.perturbed_answers)


# --- TOFU augmentation CSVs (Python literals) ---------------------------------------------------
_FORGET = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a writer.",
            "paraphrased_answer": f"A writer, person {i}.",
            "perturbed_answer": [f"Person {i} is a baker.", f"Person {i} is a pilot."]}
           for i in range(3)]
_literal_cells = st.one_of(
    st.lists(st.text(max_size=10), max_size=3).map(repr),
    _json_values.map(repr),
    st.text(max_size=20),
    st.sampled_from(["['a', 'b'", "[1, 2]", "('x',)", "__import__('os')", "[" * 200,
                     "['\\x", "1e999", "[" + "9" * 5000 + "]", "{'a': [}", "b'xy'"]),
)
_questions = st.sampled_from([r["question"] for r in _FORGET] + ["Unrelated?", ""])
_answers = st.sampled_from([r["answer"] for r in _FORGET] + ["nothing", ""])
_csv_rows = st.lists(
    st.one_of(
        st.tuples(_questions, _answers, _literal_cells, _literal_cells).map(list),
        st.lists(st.text(max_size=8), max_size=6),
    ),
    max_size=5,
)


def _csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


_csv_contents = st.one_of(
    _csv_rows.map(_csv_bytes),
    st.tuples(_csv_rows.map(_csv_bytes), st.integers(0, 300), _junk).map(lambda t: _corrupt(*t)),
    st.binary(max_size=80),
)


@FUZZ
@given(paraphrases=_csv_contents, perturbed=_csv_contents)
def test_augmentation_csvs_load_or_raise_our_error(paraphrases, perturbed):
    with _tmp() as directory:
        root = Path(directory)
        (root / "forget01.json").write_text(json.dumps(_FORGET))
        aug = root / "aug" / "forget01"
        aug.mkdir(parents=True)
        (aug / "paraphrase_res.csv").write_bytes(paraphrases)
        (aug / "perturb_res.csv").write_bytes(perturbed)
        try:
            augmentation = load_tofu_augmentation(root, "forget01")
        except UldkitError as err:
            _assert_one_line_error(err)
            return
    assert isinstance(augmentation, Augmentation)
    questions = {r["question"] for r in _FORGET}
    assert set(augmentation.paraphrases) <= questions
    assert set(augmentation.wrong_answers) <= questions
    for record in _FORGET:  # evaluation answers never leak into training augmentation
        evaluation = {record["paraphrased_answer"], *record["perturbed_answer"]}
        pairs = augmentation.paraphrases.get(record["question"], [])
        assert not {p.answer for p in pairs} & evaluation
        assert not set(augmentation.wrong_answers.get(record["question"], [])) & (
            evaluation | {record["answer"]})


# --- documents ------------------------------------------------------------------------------------
@FUZZ
@given(content=_file_bytes, suffix=st.sampled_from([".json", ".jsonl", ".txt", ".csv"]),
       folder=st.booleans())
def test_documents_load_or_raise_our_error(content, suffix, folder):
    with _tmp() as directory:
        root = Path(directory)
        if folder:  # a folder of .txt files: this one and a good one
            path = root / "docs"
            path.mkdir()
            (path / "a.txt").write_text("A fine passage.")
            (path / f"b{suffix}").write_bytes(content)
        else:
            path = root / f"docs{suffix}"
            path.write_bytes(content)
        try:
            documents = load_documents(path)
        except UldkitError as err:
            _assert_one_line_error(err)
            return
    assert isinstance(documents, DocumentDataset) and len(documents) > 0
    assert all(d.text.strip() and isinstance(d.source, str) for d in documents)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(["Question: who wrote it?\nAnswer: a writer from the sea.",
                                "Passages of plain text, with words."] * 4, vocab_size=300)


@FUZZ
@given(texts=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=3),
       max_tokens=st.integers(-2, 12), stride=st.none() | st.integers(-1, 12))
def test_document_chunks_keep_every_token_or_raise_our_error(tokenizer, texts, max_tokens,
                                                              stride):
    prefix = tokenizer("")["input_ids"]  # what the tokenizer puts before any text: BOS
    assert prefix and set(prefix) <= set(tokenizer.all_special_ids)
    room = max_tokens - len(prefix)  # window tokens per example
    try:
        examples = encode_document_chunks(tokenizer, texts, max_tokens, stride)
    except UldkitError as err:
        _assert_one_line_error(err)
        assert room < 1 or (stride is not None and stride < 1)
        return
    # Each example is the prefix (not a label) + a window; a document's windows start every
    # `step` tokens (stride, capped at the room), so consecutive ones share room - step.
    step = room if stride is None else min(stride, room)
    windows = []
    for example in examples:
        assert example.input_ids[:len(prefix)] == prefix
        assert example.labels == [IGNORE_INDEX] * len(prefix) + example.input_ids[len(prefix):]
        windows.append(example.input_ids[len(prefix):])
        assert 1 <= len(windows[-1]) <= room
    taken = 0
    for text in texts:
        document = tokenizer(text, add_special_tokens=False)["input_ids"]
        document += [tokenizer.eos_token_id]
        rebuilt: list[int] = []
        while len(rebuilt) < len(document):
            window = windows[taken]
            taken += 1
            overlap = room - step if rebuilt else 0
            assert window[:overlap] == rebuilt[len(rebuilt) - overlap:]
            rebuilt += window[overlap:]
        assert rebuilt == document
    assert taken == len(windows)


# --- QA encoding: long and odd fields are truncated with a warning ----------------------------
@FUZZ
@given(question=st.text(max_size=400), answer=st.text(max_size=400),
       max_length=st.integers(4, 64))
def test_encode_qa_fits_any_pair_into_max_length(tokenizer, question, answer, max_length):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            encoded = encode_qa(tokenizer, question, answer, max_length)
        except UldkitError as err:
            _assert_one_line_error(err)
            assert not answer.strip()
            return
    assert len(encoded.input_ids) <= max_length
    assert len(encoded.labels) == len(encoded.input_ids)
    assert encoded.prompt_length >= 1
    assert all(label == IGNORE_INDEX for label in encoded.labels[:encoded.prompt_length])
    assert encoded.labels[encoded.prompt_length:] == encoded.input_ids[encoded.prompt_length:]


# --- TOFU logs ------------------------------------------------------------------------------------
_log_fields = ["avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall",
               "rouge1_recall", "generated_text", "gt_loss", "num_token_gt", "truth_ratio",
               "num_token_perturb", "perturb_loss", "normalized_gt_loss", "other"]
_losses = st.floats(0, 1e4) | st.sampled_from([0.0, 745.0, 1e300])
_odd_values = st.one_of(st.floats(), st.integers(-2, 50), st.lists(st.floats(), max_size=3),
                        st.lists(st.integers(-1, 9), max_size=3), st.lists(_text, max_size=3),
                        _json_values)


@st.composite
def _valid_set_log(draw, n: int, perturbed: int) -> dict:
    indices = [str(i) for i in range(n)]
    return {
        "avg_gt_loss": {i: draw(_losses) for i in indices},
        "avg_paraphrased_loss": {i: draw(_losses) for i in indices},
        "average_perturb_loss": {i: draw(st.lists(_losses, min_size=perturbed,
                                                  max_size=perturbed)) for i in indices},
        "rougeL_recall": {i: draw(st.floats(0, 1)) for i in indices},
        "num_token_gt": {i: draw(st.integers(0, 9)) for i in indices},
        "generated_text": {i: draw(st.lists(_text, min_size=3, max_size=3)) for i in indices},
    }


@st.composite
def _mutated_logs(draw) -> dict:
    """A valid log (four sets, same forget size), then up to three random corruptions."""
    log = {key: draw(_valid_set_log(draw(st.integers(1, 4)), draw(st.integers(1, 3))))
           for key in SET_KEYS}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*SET_KEYS, "other.json"]))
        set_log = log.setdefault(key, {})
        field = draw(st.sampled_from(_log_fields))
        action = draw(st.sampled_from(["value", "drop_field", "drop_set", "index", "column"]))
        if action == "drop_set":
            log.pop(key)
        elif action == "drop_field":
            set_log.pop(field, None)
        elif action == "column":
            set_log[field] = draw(_json_values)
        elif isinstance(set_log.get(field), dict) and set_log[field]:
            index = draw(st.sampled_from(sorted(set_log[field])))
            if action == "index":
                set_log[field][draw(st.sampled_from(["x", "-1", "01", "\u00b2", "9"]))] = (
                    set_log[field].pop(index))
            else:
                set_log[field][index] = draw(_odd_values)
    return log


_logs = _mutated_logs() | st.dictionaries(_text, _json_values, max_size=3)
_log_bytes = st.one_of(
    _logs.map(lambda log: json.dumps(log).encode()),
    st.tuples(_logs.map(lambda log: json.dumps(log).encode()), st.integers(0, 400), _junk)
    .map(lambda t: _corrupt(*t)),
    st.binary(max_size=60),
)


@FUZZ
@given(content=_log_bytes, as_directory=st.booleans())
def test_tofu_log_loads_and_aggregates_or_raises_our_error(content, as_directory):
    with _tmp() as directory:
        root = Path(directory)
        path = root / "eval_log_aggregated.json"
        path.write_bytes(content)
        try:
            log = load_tofu_log(root if as_directory else path)
            figures = aggregate_tofu(log, log)
        except UldkitError as err:
            _assert_one_line_error(err)
            return
    assert set(SET_KEYS) <= set(log)
    assert math.isfinite(figures.model_utility) and figures.model_utility >= 0
    assert figures.forget_quality == pytest.approx(1.0)  # a log against itself


# --- the collator ---------------------------------------------------------------------------------
@st.composite
def _examples(draw):
    examples = []
    for _ in range(draw(st.integers(1, 6))):
        ids = draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=12))
        labels = [token if draw(st.booleans()) else IGNORE_INDEX for token in ids]
        examples.append(Encoded(input_ids=ids, labels=labels))
    return examples


@settings(max_examples=150, deadline=None)
@given(examples=_examples(), pad=st.integers(0, 2**31 - 1),
       side=st.sampled_from(["left", "right"]))
def test_collate_invariants(examples, pad, side):
    batch = collate(examples, pad, side)
    width = max(len(e.input_ids) for e in examples)
    for name in ("input_ids", "attention_mask", "position_ids", "labels"):
        assert batch[name].shape == (len(examples), width) and batch[name].dtype == torch.long
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        real = slice(width - n, width) if side == "left" else slice(0, n)
        pads = slice(0, width - n) if side == "left" else slice(n, width)
        assert batch["input_ids"][row, real].tolist() == example.input_ids
        assert batch["labels"][row, real].tolist() == example.labels
        assert batch["attention_mask"][row, real].tolist() == [1] * n
        assert batch["position_ids"][row, real].tolist() == list(range(n))
        assert batch["attention_mask"][row, pads].tolist() == [0] * (width - n)
        assert batch["labels"][row, pads].tolist() == [IGNORE_INDEX] * (width - n)
        assert batch["input_ids"][row, pads].tolist() == [pad] * (width - n)
        # Padding positions stay in range (left: 0; right: the last real position).
        assert batch["position_ids"][row, pads].tolist() == [0 if side == "left" else n - 1] * (
            width - n)


@FUZZ
@given(examples=st.lists(st.builds(
    Encoded, input_ids=st.lists(st.integers(0, 100), max_size=4),
    labels=st.lists(st.integers(-100, 100), max_size=4)), max_size=3),
    pad=st.one_of(st.integers(-3, 5), st.none(), st.booleans(), st.floats(0, 2)),
    side=st.one_of(st.sampled_from(["left", "right"]), _text))
def test_collate_refuses_malformed_batches_with_our_errors(examples, pad, side):
    try:
        batch = collate(examples, pad, side)
    except UldkitError as err:
        _assert_one_line_error(err)
        return
    assert batch["input_ids"].shape[0] == len(examples)
    assert examples and side in ("left", "right") and isinstance(pad, int) and pad >= 0
    assert all(len(e.input_ids) == len(e.labels) > 0 for e in examples)
