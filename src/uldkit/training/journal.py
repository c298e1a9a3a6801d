"""What is finished, tied to the settings and the data it was computed with: the one resume
design of training and evaluation.

Every resumable piece of work records an *identity* (the settings its result depends on, and
`data_sha256` of its data) beside what it finished; resuming compares identities with
`check_identity`, so work computed otherwise is refused with the settings that differ, never
silently mixed in. The trainer records its identity in each checkpoint's trainer_state.json;
evaluations use a `SampleJournal`: an append-only file of finished samples, so that an
interrupted evaluation resumes without recomputing them. `JournalledStages` uses the same file
for evaluations made of a few long stages (MUSE, the MIA audit): each stage's result is one
record.

Format (JSONL): a header line `{"journal": 1, "identity": {...}}` recording what the scores
depend on, then one line per finished batch, `{"samples": {"<index>": record, ...}}`. Each
line is written whole, flushed and fsynced before the evaluation goes on, so a crash can
leave at most the last line half-written: reading stops at the first line that is not
complete, valid JSON, and that tail is cut off before new lines are appended.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError
from uldkit.io import atomic_write_text

JOURNAL_FORMAT = 1


class SampleJournal:
    """Finished samples `{index: record}` of one evaluation set, for indices `0..size-1`."""

    def __init__(self, path: str | os.PathLike, identity: Mapping[str, Any], size: int) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.size = size

    def start(self, resume: bool) -> dict[int, dict[str, Any]]:
        """The samples recorded so far (none unless `resume`); afterwards `append` adds more.

        A journal written with another identity is a ConfigError when resuming.
        """
        if resume and self.path.is_file():
            recorded = self._read()
            if recorded is not None:
                return recorded
        header = {"journal": JOURNAL_FORMAT, "identity": self.identity}
        atomic_write_text(self.path, json.dumps(header) + "\n")
        return {}

    def append(self, records: Mapping[int, Mapping[str, Any]]) -> None:
        """Add finished samples as one line, on disk before this returns."""
        if not records:
            return
        line = json.dumps({"samples": {str(i): dict(r) for i, r in records.items()}})
        with open(self.path, "ab") as handle:
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict[int, dict[str, Any]] | None:
        """Recorded samples, or None when even the header is unreadable (start afresh)."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")[:-1]  # the piece after the last newline is incomplete
        header = _parse(lines[0]) if lines else None
        if not isinstance(header, dict) or header.get("journal") != JOURNAL_FORMAT:
            return None
        check_identity(self.path, header.get("identity"), self.identity)
        recorded: dict[int, dict[str, Any]] = {}
        valid_bytes = len(lines[0]) + 1
        for line in lines[1:]:
            samples = self._samples(_parse(line))
            if samples is None:
                break
            recorded.update(samples)
            valid_bytes += len(line) + 1
        if valid_bytes < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(valid_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        return recorded

    def _samples(self, entry: Any) -> dict[int, dict[str, Any]] | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("samples"), dict):
            return None
        samples = {}
        for key, record in entry["samples"].items():
            in_range = key.isascii() and key.isdigit() and int(key) < self.size
            if not (in_range and isinstance(record, dict)):
                return None
            samples[int(key)] = record
        return samples


class JournalledStages:
    """Named stages of one evaluation; each stage's result is journalled when it finishes, so
    a resumed run recomputes only the stages it had not finished.

    Results go through JSON (lists, dicts, numbers, strings; -inf is kept) on the first run
    too, so a resumed run sees exactly what a fresh one does.
    """

    def __init__(self, names: Sequence[str], journal: SampleJournal | None = None,
                 resume: bool = False) -> None:
        self.names = list(names)
        self.journal = journal
        self.finished = journal.start(resume) if journal is not None else {}
        self.resumed: list[str] = []

    def run(self, name: str, compute: Callable[[], Any]) -> Any:
        index = self.names.index(name)
        record = self.finished.get(index)
        if record is not None and record.get("stage") == name and "result" in record:
            self.resumed.append(name)
            return record["result"]
        result = json.loads(json.dumps(compute()))
        if self.journal is not None:
            self.journal.append({index: {"stage": name, "result": result}})
        return result


def data_sha256(data: Any) -> str:
    """A digest of JSON-able evaluation data, for a journal's identity: a journal of other
    data is not resumed."""
    content = json.dumps(data, sort_keys=True)
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def check_identity(where: str | os.PathLike, recorded: Any, current: Mapping[str, Any]) -> None:
    """ConfigError unless the work recorded at `where` was computed with `current`'s identity."""
    if recorded != current:
        raise ConfigError(
            f"{where} was computed with other settings "
            f"({describe_identity_change(recorded, current)}); pass --overwrite to start over"
        )


def describe_identity_change(old: Any, new: Mapping[str, Any]) -> str:
    """Which recorded settings differ from the current ones, for an error message."""
    if not isinstance(old, dict):
        return "no settings recorded"
    changed = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k}: {old.get(k)!r} now {new[k]!r}" for k in changed) or "unknown"


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
