"""What a file holds, judged by its bytes, never by its name.

A pickle renamed `weights.dat` is still a pickle, and `torch.load` would still run it. Each
file is sniffed for the formats that can run code when loaded (pickle in any protocol, a zip
archive holding `*.pkl`, numpy arrays of Python objects, which are stored as pickles) and for
the formats known not to (safetensors, plain numpy arrays, GGUF, images, text). Anything else
is "unknown", so a scan can say it could not classify the file instead of calling it safe.
"""

from __future__ import annotations

import ast
import codecs
import io
import pickletools
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from uldkit.models.pickle_scan import ZIP_MAGIC

PICKLE = "pickle"  # a pickle stream, or a zip archive with *.pkl members (torch.save)
NUMPY_OBJECTS = "numpy object array"  # .npy / .npz whose arrays are pickled Python objects
SAFETENSORS = "safetensors"
NUMPY = "numpy array"
GGUF = "gguf"
IMAGE = "image"
TEXT = "text"
EMPTY = "empty"
KNOWN_BINARY = "known binary"  # by name, after every dangerous format was ruled out
UNKNOWN = "unknown"

# Binary formats that cannot run code, recognised by name once the bytes are not a pickle,
# a zip or a numpy file: sentencepiece and ONNX models (protobuf), flax weights (msgpack).
_KNOWN_BINARY_SUFFIXES = frozenset({".model", ".spm", ".onnx", ".msgpack"})
_IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_NUMPY_MAGIC = b"\x93NUMPY"
_HEAD_BYTES = 1 << 16
_PICKLE_PREFIX_BYTES = 1 << 20
_MAX_NUMPY_HEADER = 1 << 20
# Opcodes that import, and those that call what was imported: a pickle that runs code needs
# both (INST does both), however malformed the bytes after them are.
_IMPORT_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})
_CALL_OPS = frozenset({"REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})
_DOTTED = re.compile(r"[A-Za-z_][\w.]* [A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Sniffed:
    kind: str
    # For NUMPY_OBJECTS: where the pickled objects are (archive member, byte offset).
    payloads: tuple[tuple[str | None, int], ...] = ()


def sniff_file(path: Path) -> Sniffed:
    """Classify `path` by its contents; unreadable files are UNKNOWN."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return Sniffed(UNKNOWN)
    if not head:
        return Sniffed(EMPTY)
    if head.startswith(ZIP_MAGIC):
        return _sniff_zip(path)
    if head.startswith(_NUMPY_MAGIC):
        offset = _numpy_object_offset(head)
        if offset is None:
            return Sniffed(NUMPY)
        return Sniffed(NUMPY_OBJECTS, ((None, offset),)) if offset >= 0 else Sniffed(UNKNOWN)
    if _is_pickle(path, head, size):
        return Sniffed(PICKLE)
    if _is_safetensors(head, size):
        return Sniffed(SAFETENSORS)
    if head.startswith(b"GGUF"):
        return Sniffed(GGUF)
    if head.startswith(_IMAGE_MAGICS):
        return Sniffed(IMAGE)
    if _is_text(head):
        return Sniffed(TEXT)
    if path.suffix.lower() in _KNOWN_BINARY_SUFFIXES:
        return Sniffed(KNOWN_BINARY)
    return Sniffed(UNKNOWN)


def read_numpy_payload(path: Path, member: str | None, offset: int, limit: int) -> bytes:
    """The bytes from `offset` on, in the file or in its archive `member` (at most `limit`)."""
    if member is None:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
        stream.read(offset)
        return stream.read(limit)


def _is_pickle(path: Path, head: bytes, size: int) -> bool:
    """Whether the file starts as a pickle: PROTO 2-5 then a valid opcode (every pickle of
    protocol 2 or later), or, without a header (protocols 0 and 1), a call of an import."""
    with open(path, "rb") as handle:
        stream = io.BytesIO(handle.read(_PICKLE_PREFIX_BYTES))
    imported = False
    try:
        for count, (op, arg, position) in enumerate(pickletools.genops(stream)):
            if count == 0 and op.name == "PROTO":
                if not 2 <= int(arg) <= 5:
                    return False
                continue
            if count == 1 and head[:1] == b"\x80":
                return True  # PROTO and a valid opcode after it
            if op.name in _IMPORT_OPS and (op.name == "STACK_GLOBAL" or _DOTTED.fullmatch(
                    str(arg))):
                imported = True
            if imported and op.name in _CALL_OPS:
                return True
            if op.name == "STOP":
                return position + 1 == size  # the whole file is exactly one pickle
    except Exception:  # bytes that are not opcodes: whatever came before decides
        return False
    return False


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return 2 <= header_size <= size - 8 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _numpy_object_offset(head: bytes) -> int | None:
    """Where an .npy file's pickled objects start; None for a plain array, -1 if unreadable."""
    if len(head) < 10:
        return -1
    major = head[6]
    if major == 1:
        (length,) = struct.unpack("<H", head[8:10])
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            return -1
        (length,) = struct.unpack("<I", head[8:12])
        start = 12
    else:
        return -1
    if length > _MAX_NUMPY_HEADER or start + length > len(head):
        return -1
    try:
        header = ast.literal_eval(head[start:start + length].decode("utf-8"))
        descr = header["descr"]
    except Exception:  # literal_eval never runs code; any failure means "not a numpy header"
        return -1
    return start + length if _holds_objects(descr) else None


def _holds_objects(descr: object) -> bool:
    """Whether a numpy dtype description has an object ('O') field anywhere."""
    if isinstance(descr, str):
        return "O" in descr
    if isinstance(descr, list | tuple):
        # Structured dtypes: (name, type[, shape]) entries; only the types matter.
        for entry in descr:
            if isinstance(entry, tuple) and len(entry) >= 2:
                if _holds_objects(entry[1]):
                    return True
            elif _holds_objects(entry):
                return True
    return False


def _sniff_zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            if any(name.endswith(".pkl") for name in names):
                return Sniffed(PICKLE)
            if not names or not all(name.endswith(".npy") for name in names):
                return Sniffed(UNKNOWN)
            payloads = []
            for name in names:
                with archive.open(name) as member:
                    offset = _numpy_object_offset(member.read(_HEAD_BYTES))
                if offset == -1:
                    return Sniffed(UNKNOWN)
                if offset is not None:
                    payloads.append((name, offset))
    except Exception:  # a corrupt archive fails in many ways; none of them is "safe"
        return Sniffed(UNKNOWN)
    return Sniffed(NUMPY_OBJECTS, tuple(payloads)) if payloads else Sniffed(NUMPY)
