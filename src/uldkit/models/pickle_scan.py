"""List what a pickle would import, by reading its opcodes: nothing is ever unpickled.

Unpickling can call any importable function (`os.system`, `builtins.eval`, ...), so a
pickle is judged by the globals its opcodes name. A small stack simulation recovers the
module and name of `STACK_GLOBAL` (protocol 4+), which takes both from the stack, including
strings fetched back from the memo. Torch checkpoints are handled in both layouts: a zip
archive holding `*/data.pkl`, and the legacy layout of several pickles in a row.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

_TORCH_STORAGES = (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble",
)
_TORCH_DTYPES = (
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
    "int32", "int", "int16", "short", "int8", "uint8", "bool", "complex64", "complex128",
)

# What ordinary torch state-dict checkpoints reference; calling these builds tensors only.
SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.Size",
        "torch.device",
    }
    | {f"torch.{kind}Storage" for kind in _TORCH_STORAGES}
    | {f"torch.{dtype}" for dtype in _TORCH_DTYPES}
)

UNRESOLVED_STACK_GLOBAL = "<unresolved STACK_GLOBAL>"
ZIP_MAGIC = b"PK\x03\x04"
_MAX_ZIP_MEMBER_BYTES = 512 * 1024 * 1024

_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
     "BINUNICODE8"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_IMPORT_OPS = frozenset({"GLOBAL", "INST"})
_EXTENSION_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes}


@dataclass(frozen=True)
class PickleFinding:
    """One pickle file: the globals it would import, those not on the allow-list, any error."""

    file: str
    imports: list[str] = field(default_factory=list)
    dangerous: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def is_dangerous(self) -> bool:
        """True when it imports anything off the allow-list or could not be read fully."""
        return bool(self.dangerous) or self.error is not None


class _Malformed(Exception):
    """The opcode stream is one the real unpickler would also reject."""


_MARK = object()
_UNKNOWN = object()


def scan_pickle_bytes(data: bytes, name: str = "<bytes>") -> PickleFinding:
    """Scan a pickle (or a zip torch checkpoint) held in memory; never raises on bad input."""
    return _scan_stream(io.BytesIO(bytes(data)), name)


def scan_pickle_file(path: str | Path, name: str | None = None) -> PickleFinding:
    """Scan one file on disk; unreadable files come back as a finding with `error` set."""
    label = name if name is not None else Path(path).name
    try:
        with open(path, "rb") as handle:
            return _scan_stream(handle, label)
    except OSError as err:
        return _finding(label, [], f"cannot read file: {err.strerror or err}")


def _scan_stream(stream: BinaryIO, name: str) -> PickleFinding:
    if stream.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
        stream.seek(0)
        return _scan_zip(stream, name)
    stream.seek(0)
    imports: list[str] = []
    return _finding(name, imports, _scan_pickle_sequence(stream, imports))


def _scan_zip(stream: BinaryIO, name: str) -> PickleFinding:
    # torch.load reads a zip checkpoint when the file starts with the zip magic, exactly
    # the test above; its pickles are the archive's *.pkl members.
    imports: list[str] = []
    try:
        with zipfile.ZipFile(stream) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".pkl")]
            if not members:
                return _finding(name, imports, "zip archive without a .pkl member")
            for info in members:
                if info.file_size > _MAX_ZIP_MEMBER_BYTES:
                    return _finding(name, imports, f"{info.filename} is too large to scan")
                error = _scan_pickle_sequence(io.BytesIO(archive.read(info)), imports)
                if error is not None:
                    return _finding(name, imports, f"{info.filename}: {error}")
    except Exception as err:  # a corrupt archive can fail in many ways; all mean "unreadable"
        return _finding(name, imports, f"unreadable zip archive: {_describe(err)}")
    return _finding(name, imports, None)


def _scan_pickle_sequence(stream: BinaryIO, imports: list[str]) -> str | None:
    """Scan the pickles stored back to back in `stream`; return an error for the first one.

    Legacy torch files hold several pickles followed by raw tensor bytes. A later segment
    that fails to parse is taken for that raw data, but what it imported before failing
    is still kept, since a real unpickler would have imported it too.
    """
    first = True
    while True:
        start = stream.tell()
        if not stream.read(1):
            return "empty file" if first else None
        stream.seek(start)
        try:
            _scan_one_pickle(stream, imports)
        except Exception as err:  # any parse failure, whatever the bytes: report, never raise
            return f"not a valid pickle (byte {start}): {_describe(err)}" if first else None
        first = False


class _UnpicklerReads:
    """Reads a pickle as the C unpickler reads a file (torch.load's way).

    A FRAME's bytes are read ahead; a read that runs past the frame's end drops the rest of
    the frame and reads from the file. The pickle format forbids an opcode that straddles a
    frame's end, and `pickle.loads` reads the same bytes differently, so `straddled` makes
    the pickle unreadable, once every name the unpickler would look up has been listed.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._frame = b""
        self.straddled = False

    def start_frame(self, length: int) -> None:
        self._frame = self.read(length)
        if len(self._frame) < length:
            raise _Malformed("pickle data was truncated")

    def read(self, size: int) -> bytes:
        if size <= len(self._frame):
            data, self._frame = self._frame[:size], self._frame[size:]
            return data
        self._drop_frame()
        return self._stream.read(size)

    def readline(self) -> bytes:
        end = self._frame.find(b"\n")
        if end >= 0:
            line, self._frame = self._frame[: end + 1], self._frame[end + 1:]
            return line
        self._drop_frame()
        return self._stream.readline()

    def _drop_frame(self) -> None:
        if self._frame:
            self.straddled = True
            self._frame = b""


def _scan_one_pickle(stream: BinaryIO, imports: list[str]) -> None:
    stack: list[object] = []
    memo: dict[int, object] = {}
    reader = _UnpicklerReads(stream)
    for op, arg in _opcodes(reader):
        kind = op.name
        if kind == "FRAME":
            reader.start_frame(arg)
        if kind == "PROTO" and arg > pickle.HIGHEST_PROTOCOL:
            raise _Malformed(f"unsupported pickle protocol {arg}")
        if kind in _IMPORT_OPS:
            module, attribute = arg
            imports.append(f"{module}.{attribute}")
        elif kind in _EXTENSION_OPS:
            imports.append(f"<extension code {arg}>")
        if kind in _PUT_OPS:
            memo[arg] = _top(stack)
        elif kind == "MEMOIZE":
            memo[len(memo)] = _top(stack)
        elif kind in _GET_OPS:
            if arg not in memo:
                raise _Malformed(f"memo key {arg} read before it was written")
            stack.append(memo[arg])
        elif kind == "DUP":
            stack.append(_top(stack))
        elif kind == "POP":
            if not stack:
                raise _Malformed("POP on an empty stack")
            stack.pop()
        elif kind == "STACK_GLOBAL":
            attribute, module = _pop(stack), _pop(stack)
            if isinstance(module, str) and isinstance(attribute, str):
                imports.append(f"{module}.{attribute}")
            else:
                imports.append(UNRESOLVED_STACK_GLOBAL)
            stack.append(_UNKNOWN)
        else:
            _apply_stack_effect(op, stack)
            if kind in _STRING_OPS and isinstance(arg, str):
                stack[-1] = arg
    if reader.straddled:
        raise _Malformed("an opcode runs past the end of its frame")


def _opcodes(stream: _UnpicklerReads) -> Iterator[tuple[pickletools.OpcodeInfo, Any]]:
    """The opcodes of one pickle, up to its STOP, as `pickletools.genops` reads them, except
    GLOBAL and INST, whose module and name are read as the C unpickler reads them."""
    while True:
        code = stream.read(1)
        op = _OPCODES.get(code)
        if op is None:
            raise _Malformed(f"invalid opcode {code!r}" if code else "pickle data was truncated")
        if op.name in _IMPORT_OPS:
            arg: Any = (_read_name_line(stream), _read_name_line(stream))
        else:
            arg = None if op.arg is None else op.arg.reader(stream)
        yield op, arg
        if op.name == "STOP":
            return


def _read_name_line(stream: _UnpicklerReads) -> str:
    # Unlike pickletools (escape-decoded ASCII), the unpickler takes the raw line as UTF-8,
    # less its last byte, even at the end of the data where that byte is no newline.
    line = stream.readline()
    if len(line) < 2:
        raise _Malformed("pickle data was truncated")
    return line[:-1].decode("utf-8")


def _apply_stack_effect(op: pickletools.OpcodeInfo, stack: list[object]) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        below_mark = before.index(pickletools.markobject)
        # OBJ needs its class above the mark: the items named between mark and stackslice
        needed_above = len(before) - below_mark - 2
        if _pop_to_mark(stack) < needed_above:
            raise _Malformed(f"{op.name} without enough items above its MARK")
        for _ in range(below_mark):
            _pop(stack)
    else:
        for _ in before:
            _pop(stack)
    for item in op.stack_after:
        stack.append(_MARK if item is pickletools.markobject else _UNKNOWN)


def _top(stack: list[object]) -> object:
    if not stack or stack[-1] is _MARK:
        raise _Malformed("stack underflow")
    return stack[-1]


def _pop(stack: list[object]) -> object:
    value = _top(stack)
    stack.pop()
    return value


def _pop_to_mark(stack: list[object]) -> int:
    """Pop down to and including the topmost MARK; return how many items sat above it."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            above = len(stack) - index - 1
            del stack[index:]
            return above
    raise _Malformed("no MARK on the stack")


def _finding(name: str, imports: list[str], error: str | None) -> PickleFinding:
    unique = sorted(set(imports))
    dangerous = [ref for ref in unique if ref not in SAFE_GLOBALS]
    return PickleFinding(file=name, imports=unique, dangerous=dangerous, error=error)


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
