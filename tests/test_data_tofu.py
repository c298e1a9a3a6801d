"""The TOFU loader and the record reader, on the real TOFU files and on broken ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from uldkit.data import (
    TOFU_SPLITS,
    load_tofu,
    load_tofu_augmentation,
    qa_from_record,
    read_records,
    retain_split_for,
)
from uldkit.errors import DataError


# --- the real files -------------------------------------------------------------------------
def test_forget10_has_400_rows_with_all_evaluation_fields(tofu_dir):
    forget = load_tofu(tofu_dir, "forget10")
    assert len(forget) == 400 and forget.name == "forget10"
    assert forget.has_eval_fields()
    assert all(len(p.perturbed_answers) == 5 for p in forget)
    assert all(p.paraphrased_question and p.subject for p in forget)
    assert forget[0].answer == "The author's full name is Hsiao Yun-Hwa."


@pytest.mark.parametrize(
    ("split", "rows"),
    [("forget01", 40), ("forget05", 200), ("retain90", 3600), ("retain95", 3800),
     ("retain99", 3960), ("retain_perturbed", 400), ("real_authors_perturbed", 100),
     ("world_facts_perturbed", 117)],
)
def test_split_sizes(tofu_dir, split, rows):
    assert len(load_tofu(tofu_dir, split)) == rows


def test_full_is_forget10_then_retain90(tofu_dir):
    full = load_tofu(tofu_dir, "full")
    forget, retain = load_tofu(tofu_dir, "forget10"), load_tofu(tofu_dir, "retain90")
    assert len(full) == 4000 and full.name == "full"
    assert full.pairs == forget.pairs + retain.pairs


def test_forget_splits_nest_and_complement_their_retain_split(tofu_dir):
    questions = {s: load_tofu(tofu_dir, s).questions()
                 for s in ("forget01", "forget05", "forget10")}
    assert questions["forget01"] < questions["forget05"] < questions["forget10"]
    for split, forget in questions.items():
        retain = load_tofu(tofu_dir, retain_split_for(split)).questions()
        assert not forget & retain
        retain_rows = len(load_tofu(tofu_dir, retain_split_for(split)))
        assert len(load_tofu(tofu_dir, split)) + retain_rows == 4000


def test_general_sets_use_the_answer_as_paraphrase(tofu_dir):
    for split in ("real_authors_perturbed", "world_facts_perturbed"):
        data = load_tofu(tofu_dir, split)
        assert data.has_eval_fields()
        assert all(p.paraphrased_answer == p.answer and len(p.perturbed_answers) == 3 for p in data)


def test_a_direct_file_path_loads(tofu_dir):
    data = load_tofu(tofu_dir / "world_facts_perturbed.json")
    assert len(data) == 117 and data.name == "world_facts_perturbed"
    assert data[0].question == "Where would you find the Eiffel Tower?"


@pytest.mark.parametrize("split", ["forget01", "forget05", "forget10"])
def test_augmentation_covers_every_forget_question(tofu_dir, split):
    forget = load_tofu(tofu_dir, split)
    augmentation = load_tofu_augmentation(tofu_dir, split)
    assert set(augmentation.paraphrases) == forget.questions()
    assert set(augmentation.wrong_answers) == forget.questions()
    for pair in forget:
        paraphrases = augmentation.paraphrases[pair.question]
        wrong = augmentation.wrong_answers[pair.question]
        assert paraphrases and wrong
        evaluation = {pair.paraphrased_answer, *pair.perturbed_answers}
        assert not evaluation & {p.answer for p in paraphrases}
        assert not evaluation & set(wrong) and pair.answer not in wrong


def test_augmentation_row_with_reworded_question_is_matched_by_answer(tofu_dir):
    # Row 61 of the forget10 CSVs drops the name from the question; its answer is intact.
    forget = load_tofu(tofu_dir, "forget10")
    question = forget[60].question
    assert "Rajeev" in question
    augmentation = load_tofu_augmentation(tofu_dir, "forget10")
    assert len(augmentation.paraphrases[question]) > 5
    assert augmentation.wrong_answers[question]


def test_perturb_file_is_filtered_to_the_split(tofu_dir):
    augmentation = load_tofu_augmentation(tofu_dir, "forget01")
    assert len(augmentation.wrong_answers) == 40  # the CSV has 400 rows


def test_retain_split_for():
    assert [retain_split_for(s) for s in ("forget01", "forget05", "forget10")] == [
        "retain99", "retain95", "retain90"]
    with pytest.raises(DataError, match="forget01, forget05, forget10"):
        retain_split_for("retain90")


# --- user errors ----------------------------------------------------------------------------
def test_unknown_split_lists_the_known_ones(tofu_dir):
    with pytest.raises(DataError) as err:
        load_tofu(tofu_dir, "forget20")
    assert "forget20" in str(err.value)
    assert all(split in str(err.value) for split in TOFU_SPLITS)


def test_missing_root_and_missing_file_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_tofu(tmp_path / "nowhere", "forget10")
    with pytest.raises(DataError, match=r"forget10\.json"):
        load_tofu(tmp_path, "forget10")


def test_truncated_json_names_the_file(tofu_dir, tmp_path):
    path = tmp_path / "forget10.json"
    path.write_text((tofu_dir / "forget10.json").read_text(encoding="utf-8")[:5000])
    with pytest.raises(DataError, match=r"forget10\.json line \d+ column \d+: invalid JSON.*trunc"):
        load_tofu(tmp_path, "forget10")


def test_bad_jsonl_line_is_named_with_its_number(tmp_path):
    lines = [json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) for i in range(10)]
    lines[6] = '{"question": "q6?", "answer": '
    lines.insert(3, "")  # blank lines are ignored but still counted
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"data\.jsonl line 8: invalid JSON \("):
        read_records(path)


def test_jsonl_loads_and_skips_blank_lines(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "Q1?", "answer": "A1."}\n\n  \n{"question": "Q2?", '
                    '"answer": "A2.", "perturbed_answer": "Wrong."}\n')
    data = load_tofu(path)
    assert [p.question for p in data] == ["Q1?", "Q2?"]
    assert data[1].perturbed_answers == ("Wrong.",)


def test_missing_field_is_named_with_the_record(tofu_dir, tmp_path):
    records = json.loads((tofu_dir / "forget01.json").read_text(encoding="utf-8"))
    del records[11]["answer"]
    (tmp_path / "forget01.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"forget01\.json record 12: missing field 'answer'"):
        load_tofu(tmp_path, "forget01")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"question": "Q?", "answer": 3}, "field 'answer' must be a string, got a number"),
        ({"question": "Q?", "answer": "A.", "perturbed_answer": [1, "x"]},
         "field 'perturbed_answer' must be a list of strings, item 1 is a number"),
        ({"question": "Q?", "answer": "A.", "perturbed_answer": {"a": 1}},
         "field 'perturbed_answer' must be a list of strings, got an object"),
        ({"question": "  ", "answer": "A."}, "field 'question' is empty"),
        ({"question": "Q?", "answer": "A.", "paraphrased_answer": ""},
         "field 'paraphrased_answer' is empty"),
        ({"question": "Q?", "answer": "A.", "perturbed_answer": ["ok", ""]},
         "field 'perturbed_answer' item 2 is empty"),
        ({"answer": "A."}, "missing field 'question'"),
        (["Q?", "A."], "expected an object, got a list"),
    ],
)
def test_wrong_types_and_empty_strings_are_named(record, message):
    with pytest.raises(DataError) as err:
        qa_from_record(record, "forget10.json record 12")
    assert str(err.value) == f"forget10.json record 12: {message}"


def test_record_that_is_not_an_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[{"question": "Q?", "answer": "A."}, "oops"]')
    with pytest.raises(DataError, match=r"x\.json record 2: expected an object, got a string"):
        read_records(path)
    path = tmp_path / "y.jsonl"
    path.write_text('{"question": "Q?", "answer": "A."}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"y\.jsonl line 2: expected a JSON object, got a list"):
        read_records(path)


def test_single_json_object_is_refused_clearly(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text('{\n  "question": "Q?",\n  "answer": "A."\n}\n')
    with pytest.raises(DataError, match="got a single object"):
        read_records(path)


def test_non_utf8_bytes_name_file_line_and_offset(tmp_path):
    path = tmp_path / "latin.jsonl"
    good = b'{"question": "Q?", "answer": "A."}\n'
    path.write_bytes(good + good + b'{"question": "Caf\xe9?", "answer": "A."}\n')
    with pytest.raises(DataError) as err:
        read_records(path)
    offset = len(good) * 2 + len(b'{"question": "Caf')
    assert str(err.value) == f"{path} line 3: not valid UTF-8 (byte offset {offset})"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "absent.json")
    with pytest.raises(DataError, match="is a directory"):
        read_records(tmp_path)


def test_empty_split_file_is_an_error(tmp_path):
    (tmp_path / "forget10.json").write_text("[]")
    with pytest.raises(DataError, match="no records"):
        load_tofu(tmp_path, "forget10")


def _copy_forget01_with_aug(tofu_dir: Path, tmp_path: Path) -> Path:
    shutil.copy(tofu_dir / "forget01.json", tmp_path / "forget01.json")
    shutil.copytree(tofu_dir / "aug" / "forget01", tmp_path / "aug" / "forget01")
    for file in (tmp_path / "aug" / "forget01").iterdir():
        file.chmod(0o644)
    return tmp_path / "aug" / "forget01"


def test_malformed_csv_literal_names_file_and_row(tofu_dir, tmp_path):
    aug = _copy_forget01_with_aug(tofu_dir, tmp_path)
    path = aug / "paraphrase_res.csv"
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    cells = text[4].rsplit("['", 1)
    text[4] = cells[0] + "[__import__('os').getcwd(), '" + cells[1]
    path.write_text("".join(text), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_tofu_augmentation(tmp_path, "forget01")
    assert str(err.value) == f"{path} row 5 column 4: malformed Python list literal"


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def test_csv_literal_of_the_wrong_shape_and_wrong_column_count(tofu_dir, tmp_path):
    aug = _copy_forget01_with_aug(tofu_dir, tmp_path)
    forget = load_tofu(tmp_path, "forget01")
    path = aug / "perturb_res.csv"
    pair = forget[0]
    _write_csv(path, [["Unrelated?", "No.", "Unrelated?", "[1, 2]"],
                      [pair.question, pair.answer, pair.question, "['Wrong one.']"]])
    augmentation = load_tofu_augmentation(tmp_path, "forget01")  # row 1 matches nothing
    assert augmentation.wrong_answers == {pair.question: ["Wrong one."]}
    _write_csv(path, [[pair.question, pair.answer, pair.question, "{1: 2}"]])
    with pytest.raises(DataError, match=r"perturb_res\.csv row 1 column 4: expected a Python list"):
        load_tofu_augmentation(tmp_path, "forget01")
    _write_csv(path, [[pair.question, pair.answer, "['Wrong one.']"]])
    with pytest.raises(DataError, match=r"perturb_res\.csv row 1: expected 4 columns, got 3"):
        load_tofu_augmentation(tmp_path, "forget01")


def test_missing_augmentation_file_and_unmatched_rows(tofu_dir, tmp_path):
    aug = _copy_forget01_with_aug(tofu_dir, tmp_path)
    (aug / "perturb_res.csv").unlink()
    with pytest.raises(DataError, match=r"perturb_res\.csv"):
        load_tofu_augmentation(tmp_path, "forget01")
    (aug / "perturb_res.csv").write_text('"Unknown?","Nope.","Unknown?","[\'x\']"\n')
    with pytest.raises(DataError, match="no row matches"):
        load_tofu_augmentation(tmp_path, "forget01")
    with pytest.raises(DataError, match="unknown forget split"):
        load_tofu_augmentation(tmp_path, "retain90")
