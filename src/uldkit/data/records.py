"""Reading records from JSON-list or JSONL files, and mapping them to QA pairs.

Every error is a `DataError` naming the file and the line (JSONL) or record (JSON list) at
fault. Record and line numbers are 1-based, as an editor shows them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from uldkit.data.limits import check_field_length
from uldkit.data.types import QAPair
from uldkit.errors import DataError

# TOFU's field names; `perturbed_answers` (QAPair.to_dict) is accepted as a synonym.
_OPTIONAL_TEXT_FIELDS = ("paraphrased_answer", "paraphrased_question", "subject")


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read a JSON list of objects or a JSONL file (blank lines ignored)."""
    return [record for _, record in read_located_records(path)]


def read_located_records(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """Like `read_records`, each record paired with where it came from.

    The location reads "FILE record N" (JSON list) or "FILE line N" (JSONL), ready to pass
    to `qa_from_record`.
    """
    name = str(path)
    text = read_text(path)
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return _parse_json_list(text, name)
    return _parse_jsonl(text, name)


def qa_from_record(record: Any, where: str) -> QAPair:
    """Build a QAPair from a record with TOFU's field names.

    `perturbed_answer` may be a list of strings or a single string. Fields other than
    the ones QAPair holds are ignored.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {_type_name(record)}")
    question = _required_text(record, "question", where)
    answer = _required_text(record, "answer", where)
    optional = {name: _optional_text(record, name, where) for name in _OPTIONAL_TEXT_FIELDS}
    return QAPair(
        question=question,
        answer=answer,
        perturbed_answers=_perturbed_answers(record, where),
        **optional,
    )


def record_from_qa(pair: QAPair) -> dict:
    """The TOFU-style record for a QA pair (the inverse of `qa_from_record`)."""
    record: dict[str, Any] = {"question": pair.question, "answer": pair.answer}
    if pair.paraphrased_answer is not None:
        record["paraphrased_answer"] = pair.paraphrased_answer
    if pair.perturbed_answers:
        record["perturbed_answer"] = list(pair.perturbed_answers)
    if pair.paraphrased_question is not None:
        record["paraphrased_question"] = pair.paraphrased_question
    if pair.subject is not None:
        record["subject"] = pair.subject
    return record


def read_text(path: str | os.PathLike) -> str:
    """A file's text, decoded as UTF-8 (a BOM is dropped); errors name the file and byte."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON or JSONL file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte offset {err.start})"
        ) from None


def _parse_json_list(text: str, name: str) -> list[tuple[str, dict]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        ending = " (the file ends early: truncated?)" if _ends_early(text, err) else ""
        raise DataError(
            f"{name} line {err.lineno} column {err.colno}: invalid JSON ({err.msg}){ending}"
        ) from None
    except (ValueError, RecursionError) as err:
        raise DataError(f"{name}: invalid JSON ({_short(err)})") from None
    if not isinstance(value, list):
        raise DataError(f"{name}: expected a JSON list of objects, got {_type_name(value)}")
    located = []
    for number, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{name} record {number}: expected an object, got {_type_name(record)}")
        located.append((f"{name} record {number}", record))
    return located


def _parse_jsonl(text: str, name: str) -> list[tuple[str, dict]]:
    located = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: \u2028 is data
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if _is_single_object(text):
                raise DataError(
                    f"{name}: expected a JSON list of objects or JSONL, got a single object"
                ) from None
            raise DataError(
                f"{name} line {number}: invalid JSON ({err.msg} at column {err.colno})"
            ) from None
        except (ValueError, RecursionError) as err:
            raise DataError(f"{name} line {number}: invalid JSON ({_short(err)})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{name} line {number}: expected a JSON object, got {_type_name(record)}"
            )
        located.append((f"{name} line {number}", record))
    return located


def _ends_early(text: str, err: json.JSONDecodeError) -> bool:
    rest = text[err.pos:].rstrip()
    runs_to_end = err.msg.startswith("Unterminated string") and "\n" not in rest
    return err.pos >= len(text.rstrip()) or runs_to_end


def _is_single_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _required_text(record: dict, field: str, where: str) -> str:
    if field not in record or record[field] is None:
        raise DataError(f"{where}: missing field '{field}'")
    return _checked_text(record[field], field, where)


def _optional_text(record: dict, field: str, where: str) -> str | None:
    value = record.get(field)
    return None if value is None else _checked_text(value, field, where)


def _checked_text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")
    check_field_length(value, field, where)
    if not value.strip():
        raise DataError(f"{where}: field '{field}' is empty")
    return value


def _perturbed_answers(record: dict, where: str) -> tuple[str, ...]:
    field = "perturbed_answer" if "perturbed_answer" in record else "perturbed_answers"
    value = record.get(field)
    if value is None:
        return ()
    if isinstance(value, str):
        return (_checked_text(value, field, where),)
    if not isinstance(value, list | tuple):
        raise DataError(
            f"{where}: field '{field}' must be a list of strings, got {_type_name(value)}"
        )
    answers = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise DataError(
                f"{where}: field '{field}' must be a list of strings, "
                f"item {index} is {_type_name(item)}"
            )
        check_field_length(item, f"{field}[{index}]", where)
        if not item.strip():
            raise DataError(f"{where}: field '{field}' item {index} is empty")
        answers.append(item)
    return tuple(answers)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(err: BaseException) -> str:
    message = str(err) or type(err).__name__
    return message if len(message) <= 120 else message[:117] + "..."
