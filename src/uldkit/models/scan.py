"""Check a model directory before loading it: what would it make us unpickle or execute?

Nothing is loaded, unpickled or imported here. Every file is classified by its contents, not
its name (`sniff`): pickles, torch zip archives and numpy object arrays are read opcode by
opcode (see `pickle_scan`), and files that fit no known format are listed as unclassified
rather than passed as safe. Remote code is whatever `auto_map` in a config points at, plus
every Python file shipped with the model. `check_model_dir` turns the report into a refusal
unless the user opted in.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from uldkit.errors import ModelError
from uldkit.models.pickle_scan import (
    PickleFinding,
    scan_pickle_bytes,
    scan_pickle_file,
)
from uldkit.models.sniff import (
    GGUF,
    NUMPY,
    NUMPY_OBJECTS,
    PICKLE,
    SAFETENSORS,
    TEXT,
    UNKNOWN,
    read_numpy_payload,
    sniff_file,
)

__all__ = [
    "PickleFinding",
    "RemoteCodeFinding",
    "ScanReport",
    "check_model_dir",
    "scan_model_dir",
    "scan_pickle_bytes",
]

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
SAFETENSORS_SUFFIX = ".safetensors"
# Config files whose `auto_map` makes transformers import code from the model directory.
AUTO_MAP_FILES = frozenset(
    {"config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"}
)
_MAX_NUMPY_PICKLE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class RemoteCodeFinding:
    """Code a load would run: an `auto_map` entry or a Python file."""

    file: str
    detail: str


@dataclass
class ScanReport:
    path: str
    safetensors_files: list[str] = field(default_factory=list)
    pickle_files: list[PickleFinding] = field(default_factory=list)
    remote_code: list[RemoteCodeFinding] = field(default_factory=list)
    unclassified: list[str] = field(default_factory=list)  # files of no known format

    @property
    def has_pickle(self) -> bool:
        return bool(self.pickle_files)

    @property
    def has_dangerous_pickle(self) -> bool:
        return any(finding.is_dangerous for finding in self.pickle_files)

    @property
    def has_remote_code(self) -> bool:
        return bool(self.remote_code)

    @property
    def is_safe(self) -> bool:
        return not self.has_pickle and not self.has_remote_code and not self.unclassified

    @property
    def pickle_files_needed(self) -> list[PickleFinding]:
        """Pickle files a load would have to unpickle: no safetensors file sits beside them.

        Loading prefers safetensors (uldkit passes `use_safetensors=True`), so a `.bin`
        next to a `.safetensors` file in the same folder is listed but never read.
        """
        folders = {PurePosixPath(name).parent for name in self.safetensors_files}
        return [f for f in self.pickle_files if PurePosixPath(f.file).parent not in folders]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "safetensors_files": list(self.safetensors_files),
            "pickle_files": [asdict(finding) for finding in self.pickle_files],
            "pickle_files_needed": [finding.file for finding in self.pickle_files_needed],
            "remote_code": [asdict(finding) for finding in self.remote_code],
            "unclassified_files": list(self.unclassified),
            "has_pickle": self.has_pickle,
            "has_dangerous_pickle": self.has_dangerous_pickle,
            "has_remote_code": self.has_remote_code,
            "is_safe": self.is_safe,
        }

    def summary_lines(self) -> list[str]:
        """Plain lines, each starting with its kind: safetensors/pickle/remote code/note/..."""
        lines = [f"scanned: {self.path}"]
        lines.append("safetensors: " + (", ".join(self.safetensors_files) or "none"))
        needed = {finding.file for finding in self.pickle_files_needed}
        for finding in self.pickle_files:
            lines.append(f"pickle: {finding.file}: {_describe_pickle(finding)}")
        for finding in self.pickle_files:
            if finding.is_dangerous and finding.file not in needed:
                lines.append(
                    f"warning: {finding.file} is not loaded (safetensors beside it) but "
                    f"{_danger_phrase(finding)}; never unpickle it"
                )
        if needed:
            lines.append(
                "note: pickle weights without safetensors beside them; loading them needs "
                "--allow-pickle (allow_pickle=True)"
            )
        for remote in self.remote_code:
            lines.append(f"remote code: {remote.file}: {remote.detail}")
        for name in self.unclassified:
            lines.append(f"unclassified: {name}: its contents match no format the scan "
                         "knows, so it cannot be vouched for")
        lines.append("verdict: " + _verdict(self))
        return lines


def scan_model_dir(path: str | os.PathLike) -> ScanReport:
    """List the files under `path` (a directory or one file) that loading could execute."""
    root = Path(path)
    if not root.exists():
        raise ModelError(f"model path '{root}' does not exist")
    report = ScanReport(path=str(root))
    if root.is_file():
        _scan_file(root, root.name, report, explicit=True)
    elif root.is_dir():
        for file_path, relative in _walk(root):
            _scan_file(file_path, relative, report, explicit=False)
    else:
        raise ModelError(f"model path '{root}' is neither a file nor a directory")
    return report


def check_model_dir(
    path: str | os.PathLike, *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ScanReport:
    """Scan `path` and raise ModelError unless what it would run was opted into."""
    report = scan_model_dir(path)
    problems = []
    needed = report.pickle_files_needed
    if needed and not allow_pickle:
        problems.append(
            f"pickle weights {_pickle_list(needed)} can run code when loaded; convert them to "
            "safetensors, or pass --allow-pickle (allow_pickle=True) if you trust their source"
        )
    if report.remote_code and not trust_remote_code:
        entries = "; ".join(f"{r.file}: {r.detail}" for r in report.remote_code)
        problems.append(
            f"it ships code that would run on load ({entries}); pass --trust-remote-code "
            "(trust_remote_code=True) if you trust its source"
        )
    if problems:
        raise ModelError(f"refusing to load '{report.path}': " + "; also ".join(problems))
    for finding in report.pickle_files:
        if finding.is_dangerous:
            logger.warning("%s: %s", Path(report.path) / finding.file, _danger_phrase(finding))
    return report


def _walk(root: Path):
    """Yield (path, posix path relative to root); hidden folders such as .git are skipped."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            file_path = Path(folder) / name
            yield file_path, file_path.relative_to(root).as_posix()


def _scan_file(file_path: Path, relative: str, report: ScanReport, *, explicit: bool) -> None:
    suffix = file_path.suffix.lower()
    if suffix == ".py":
        report.remote_code.append(RemoteCodeFinding(relative, "Python file shipped with the model"))
        return
    sniffed = sniff_file(file_path)
    if sniffed.kind == PICKLE or (
        suffix in PICKLE_SUFFIXES and sniffed.kind not in (SAFETENSORS, NUMPY, GGUF)
    ):
        # A pickle-named file that is no pickle is still what torch.load would be given.
        report.pickle_files.append(scan_pickle_file(file_path, relative))
    elif sniffed.kind == NUMPY_OBJECTS:
        for member, offset in sniffed.payloads:
            label = relative if member is None else f"{relative}/{member}"
            payload = read_numpy_payload(file_path, member, offset, _MAX_NUMPY_PICKLE_BYTES)
            report.pickle_files.append(scan_pickle_bytes(payload, label))
    elif sniffed.kind == SAFETENSORS and suffix == SAFETENSORS_SUFFIX:
        report.safetensors_files.append(relative)
    elif sniffed.kind == UNKNOWN or (suffix == SAFETENSORS_SUFFIX and sniffed.kind != SAFETENSORS):
        report.unclassified.append(relative)
    elif file_path.name in AUTO_MAP_FILES and sniffed.kind == TEXT:
        report.remote_code.extend(_auto_map_findings(file_path, relative))


def _auto_map_findings(file_path: Path, relative: str) -> list[RemoteCodeFinding]:
    try:
        config = json.loads(file_path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelError(f"cannot read {file_path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{file_path} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ModelError(
            f"{file_path} line {err.lineno} column {err.colno}: not valid JSON ({err.msg})"
        ) from None
    except (ValueError, RecursionError):
        raise ModelError(f"{file_path} is not valid JSON (nested too deeply, or numbers too "
                         "long)") from None
    if not isinstance(config, dict) or "auto_map" not in config:
        return []
    auto_map = config["auto_map"]
    if not isinstance(auto_map, dict):
        return [RemoteCodeFinding(relative, f"auto_map is not a mapping: {auto_map!r}")]
    findings = []
    for key, value in auto_map.items():
        references = value if isinstance(value, list | tuple) else [value]
        for reference in references:
            if reference is not None:
                detail = f"auto_map {key} -> {reference}{_module_hint(reference)}"
                findings.append(RemoteCodeFinding(relative, detail))
    return findings


def _module_hint(reference: object) -> str:
    """Where the code of an auto_map reference ("[repo--]module.Class") would come from."""
    if not isinstance(reference, str) or "." not in reference:
        return ""
    repo, _, local = reference.rpartition("--")
    module_file = local.rsplit(".", 1)[0].replace(".", "/") + ".py"
    return f" (runs {module_file} from {repo})" if repo else f" (runs {module_file})"


def _describe_pickle(finding: PickleFinding) -> str:
    if finding.error is not None:
        text = f"unparseable ({finding.error})"
        return text + (f"; dangerous imports: {', '.join(finding.dangerous)}"
                       if finding.dangerous else "")
    if finding.dangerous:
        return f"DANGEROUS imports: {', '.join(finding.dangerous)}"
    if finding.imports:
        return f"only allow-listed torch imports ({len(finding.imports)})"
    return "no imports"


def _danger_phrase(finding: PickleFinding) -> str:
    if finding.dangerous:
        return f"it imports {', '.join(finding.dangerous)}"
    return f"it cannot be parsed ({finding.error})"


def _pickle_list(findings: list[PickleFinding]) -> str:
    parts = []
    for finding in findings:
        if finding.dangerous:
            parts.append(f"{finding.file} (dangerous imports: {', '.join(finding.dangerous)})")
        elif finding.error is not None:
            parts.append(f"{finding.file} (unparseable)")
        else:
            parts.append(finding.file)
    return ", ".join(parts)


def _verdict(report: ScanReport) -> str:
    if report.is_safe:
        return "safe (no pickle, no remote code)"
    found = []
    if report.has_pickle:
        found.append("dangerous pickle" if report.has_dangerous_pickle else "pickle")
    if report.has_remote_code:
        found.append("remote code")
    if report.unclassified:
        found.append(f"{len(report.unclassified)} file(s) it could not classify")
    return "found " + " and ".join(found)
