"""Model-directory scanning: pickles are judged by their opcodes and never unpickled."""

from __future__ import annotations

import collections
import fractions
import io
import json
import pickle
import re
import shlex
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

import uldkit.cli as cli
import uldkit.cli.scan_cmd  # noqa: F401  (registers `uldkit scan`)
from uldkit.errors import ModelError
from uldkit.models.pickle_scan import SAFE_GLOBALS, UNRESOLVED_STACK_GLOBAL
from uldkit.models.scan import check_model_dir, scan_model_dir, scan_pickle_bytes


def _short_unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def protocol0_system(command: str) -> bytes:
    """GLOBAL os.system, MARK, UNICODE command, TUPLE, REDUCE, STOP."""
    return b"cos\nsystem\n(V" + command.encode("ascii") + b"\ntR."


def protocol4_stack_global_system(command: str) -> bytes:
    """posix.system built by STACK_GLOBAL from strings that went through the memo."""
    return (
        b"\x80\x04"
        + _short_unicode("posix") + b"\x94"  # memo 0
        + _short_unicode("system") + b"\x94"  # memo 1
        + b"00"  # POP both: only the memo holds them now
        + b"h\x00h\x01"  # BINGET 0, BINGET 1
        + b"\x93\x94"  # STACK_GLOBAL, MEMOIZE
        + _unicode(command) + b"\x85"  # TUPLE1
        + b"R."  # REDUCE, STOP
    )


PAYLOADS = {
    "protocol0": (protocol0_system, "os.system"),
    "protocol4": (protocol4_stack_global_system, "posix.system"),
}


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _model_dir(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    for name, content in files.items():
        target = model / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return model


def _tiny_state_dict() -> collections.OrderedDict:
    return collections.OrderedDict(
        weight=torch.arange(6, dtype=torch.float32).reshape(2, 3),
        bias=torch.ones(2, dtype=torch.bfloat16),
        steps=torch.tensor([3]),
    )


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_payloads_really_run_when_unpickled(tmp_path, kind):
    # Control: the hand-built pickles do execute, so "not executed by the scan" means something.
    build, _ = PAYLOADS[kind]
    marker = tmp_path / "ran"
    payload = tmp_path / "payload.bin"
    payload.write_bytes(build(_touch(marker)))
    code = "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"
    subprocess.run([sys.executable, "-c", code, str(payload)], check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_pickle_is_flagged_and_never_executed(tmp_path, kind):
    build, expected = PAYLOADS[kind]
    marker = tmp_path / "ran"
    model = _model_dir(tmp_path, {"pytorch_model.bin": build(_touch(marker)),
                                  "config.json": "{}"})

    report = scan_model_dir(model)

    assert [finding.file for finding in report.pickle_files] == ["pytorch_model.bin"]
    finding = report.pickle_files[0]
    assert finding.error is None
    assert finding.imports == [expected]
    assert finding.dangerous == [expected]
    assert report.has_pickle and report.has_dangerous_pickle and not report.is_safe
    assert not marker.exists()


def test_check_refuses_pickle_without_opt_in_and_names_the_flag(tmp_path):
    marker = tmp_path / "ran"
    model = _model_dir(tmp_path, {"pytorch_model.bin": protocol0_system(_touch(marker))})

    with pytest.raises(ModelError) as refused:
        check_model_dir(model)
    message = str(refused.value)
    assert "\n" not in message
    assert "pytorch_model.bin" in message and "os.system" in message
    assert "--allow-pickle" in message and "allow_pickle=True" in message

    report = check_model_dir(model, allow_pickle=True)
    assert report.has_dangerous_pickle
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_real_torch_checkpoint_has_only_safe_imports(tmp_path, zip_format):
    model = tmp_path / "model"
    model.mkdir()
    torch.save(_tiny_state_dict(), model / "pytorch_model.bin",
               _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(model / "pytorch_model.bin") == zip_format

    finding = scan_model_dir(model).pickle_files[0]

    assert finding.error is None
    assert finding.dangerous == []
    assert {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
            "torch.FloatStorage", "torch.BFloat16Storage"} <= set(finding.imports)
    with pytest.raises(ModelError, match="--allow-pickle"):
        check_model_dir(model)
    assert check_model_dir(model, allow_pickle=True).pickle_files == [finding]


def test_malicious_data_pkl_inside_zip_checkpoint_is_flagged(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", protocol0_system("true"))
        archive.writestr("archive/version", "3\n")
    finding = scan_pickle_bytes(buffer.getvalue(), "model.pt")
    assert finding.file == "model.pt"
    assert finding.dangerous == ["os.system"] and finding.error is None


def test_payload_hidden_after_a_benign_pickle_is_found():
    # Legacy torch files are several pickles in a row; the second is as live as the first.
    data = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + protocol0_system("true")
    assert scan_pickle_bytes(data).dangerous == ["os.system"]


def test_payload_with_zip_appended_is_scanned_as_the_pickle_torch_would_read():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    polyglot = protocol0_system("true") + buffer.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))
    assert scan_pickle_bytes(polyglot).dangerous == ["os.system"]


def test_protocol4_stack_global_of_a_real_pickle_is_resolved():
    finding = scan_pickle_bytes(pickle.dumps(collections.OrderedDict(a=1), protocol=4))
    assert finding.imports == ["collections.OrderedDict"]
    assert finding.dangerous == [] and finding.error is None
    # bytes under protocol 2 go through _codecs.encode, which is not on the allow-list
    assert scan_pickle_bytes(pickle.dumps(b"x", protocol=2)).dangerous == ["_codecs.encode"]


def test_inst_and_unresolvable_stack_global_are_dangerous():
    assert scan_pickle_bytes(b"(S'x'\nios\nsystem\n.").dangerous == ["os.system"]
    unresolved = scan_pickle_bytes(b"\x80\x04K\x01K\x02\x93.")
    assert unresolved.dangerous == [UNRESOLVED_STACK_GLOBAL]


def test_garbage_pickle_is_reported_unparseable(tmp_path):
    model = _model_dir(tmp_path, {"weights.pkl": b"\xff\x00 not a pickle \x01" * 10})
    finding = scan_model_dir(model).pickle_files[0]
    assert finding.error is not None and "not a valid pickle" in finding.error
    assert finding.is_dangerous
    with pytest.raises(ModelError, match="unparseable"):
        check_model_dir(model)


def test_remote_code_is_flagged_and_refused_without_trust(tmp_path):
    config = {"model_type": "x", "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM",
                                              "AutoConfig": "org/repo--configuration_x.XConfig"}}
    tokenizer_config = {"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}}
    model = _model_dir(tmp_path, {
        "config.json": json.dumps(config),
        "tokenizer_config.json": json.dumps(tokenizer_config),
        "modeling_x.py": "raise SystemExit('must never be imported')\n",
        "model.safetensors": b"",
    })

    report = scan_model_dir(model)

    details = [(finding.file, finding.detail) for finding in report.remote_code]
    assert ("config.json", "auto_map AutoModelForCausalLM -> modeling_x.XForCausalLM "
            "(runs modeling_x.py)") in details
    assert ("config.json", "auto_map AutoConfig -> org/repo--configuration_x.XConfig "
            "(runs configuration_x.py from org/repo)") in details
    assert ("tokenizer_config.json", "auto_map AutoTokenizer -> tokenization_x.XTokenizer "
            "(runs tokenization_x.py)") in details
    assert ("modeling_x.py", "Python file shipped with the model") in details
    assert len(details) == 4
    assert report.has_remote_code and not report.has_pickle and not report.is_safe

    with pytest.raises(ModelError) as refused:
        check_model_dir(model)
    message = str(refused.value)
    assert "--trust-remote-code" in message and "modeling_x.py" in message
    assert "AutoModelForCausalLM" in message and "\n" not in message
    assert check_model_dir(model, trust_remote_code=True).has_remote_code


def test_safetensors_only_directory_is_safe(tmp_path):
    model = _model_dir(tmp_path, {"config.json": json.dumps({"model_type": "llama"}),
                                  "tokenizer.json": "{}"})
    save_file({"weight": torch.zeros(2, 3)}, str(model / "model.safetensors"))

    report = check_model_dir(model)

    assert report.is_safe
    assert report.safetensors_files == ["model.safetensors"]
    assert report.to_dict()["is_safe"] is True
    assert report.summary_lines()[-1].startswith("verdict: safe")


def test_bin_beside_safetensors_does_not_block_but_dangerous_one_is_warned(tmp_path):
    marker = tmp_path / "ran"
    model = _model_dir(tmp_path, {"training_args.bin": protocol0_system(_touch(marker))})
    save_file({"weight": torch.zeros(2)}, str(model / "model.safetensors"))

    report = check_model_dir(model)

    assert report.has_dangerous_pickle and report.pickle_files_needed == []
    assert any(line.startswith("warning: training_args.bin") and "os.system" in line
               for line in report.summary_lines())
    assert not marker.exists()


def test_bin_in_a_folder_without_safetensors_still_blocks(tmp_path):
    model = _model_dir(tmp_path, {"sub/pytorch_model.bin": protocol0_system("true")})
    save_file({"weight": torch.zeros(2)}, str(model / "model.safetensors"))
    with pytest.raises(ModelError, match="sub/pytorch_model.bin"):
        check_model_dir(model)


def test_single_file_and_missing_path(tmp_path):
    checkpoint = tmp_path / "weights.ckpt"
    checkpoint.write_bytes(protocol0_system("true"))
    report = scan_model_dir(checkpoint)
    assert [finding.file for finding in report.pickle_files] == ["weights.ckpt"]

    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match="nowhere"):
        check_model_dir(missing)


def test_invalid_config_json_names_file_and_line(tmp_path):
    model = _model_dir(tmp_path, {"config.json": '{\n  "auto_map": ,\n}'})
    with pytest.raises(ModelError, match=r"config.json line 2"):
        scan_model_dir(model)


def test_cli_exit_codes(tmp_path):
    runner = CliRunner()
    safe = _model_dir(tmp_path, {"config.json": "{}"})
    save_file({"weight": torch.zeros(2)}, str(safe / "model.safetensors"))
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    (unsafe / "pytorch_model.bin").write_bytes(protocol0_system("true"))

    ok = runner.invoke(cli.app, ["scan", str(safe)])
    assert ok.exit_code == 0, ok.output
    assert "verdict: safe" in ok.output

    found = runner.invoke(cli.app, ["scan", str(unsafe)])
    assert found.exit_code == 1
    assert "pytorch_model.bin" in found.output and "os.system" in found.output

    as_json = runner.invoke(cli.app, ["scan", "--json", str(unsafe)])
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["pickle_files"][0]["dangerous"] == ["os.system"]

    missing = runner.invoke(cli.app, ["scan", str(tmp_path / "nowhere")])
    assert isinstance(missing.exception, ModelError)


def test_cli_wrapper_exit_codes(tmp_path, monkeypatch, capsys):
    # Commands from other modules are not needed here; `scan` is registered by the import.
    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    unsafe = _model_dir(tmp_path, {"pytorch_model.bin": protocol0_system("true")})
    with pytest.raises(SystemExit) as found:
        cli.main(["scan", str(unsafe)])
    assert found.value.code == 1
    with pytest.raises(SystemExit) as missing:
        cli.main(["scan", str(tmp_path / "nowhere")])
    assert missing.value.code == 2
    assert "nowhere" in capsys.readouterr().err


# ---- the scanner held against the real unpickler ---------------------------------------------
class _Harmless:
    """What the recording unpickler hands back for every global: accepts any use, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> _Harmless:
        return _Harmless()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass

    def add(self, item) -> None:
        pass


class _RecordingUnpickler(pickle.Unpickler):
    """The real (C) unpickler, whose `find_class` records each lookup and imports nothing."""

    def __init__(self, stream: io.BytesIO) -> None:
        super().__init__(stream)
        self.looked_up: list[str] = []

    def find_class(self, module: str, name: str) -> type:
        self.looked_up.append(f"{module}.{name}")
        return _Harmless

    def persistent_load(self, pid) -> _Harmless:
        return _Harmless()


# The unpickler refusing the stream itself (bad opcode, truncation, stack or memo misuse,
# oversized lengths): a scan must call such bytes unreadable or dangerous, never safe.
# Everything else it raises is a type complaint about a well-formed stream (APPEND on an int,
# NEWOBJ on a non-class, out-of-band buffers not given), which imports nothing.
_TYPE_COMPLAINTS = re.compile(r"must be a type|state is not a dictionary|out-of-band")


def _unpickle_recording(data: bytes, pickles: int = 1) -> tuple[list[str], Exception | None]:
    """Globals the real unpickler looks up in the first `pickles` pickles, and how it stopped."""
    stream, looked_up = io.BytesIO(data), []
    try:
        for _ in range(pickles):  # one unpickler (and memo) per pickle, as torch.load reads them
            unpickler = _RecordingUnpickler(stream)
            unpickler.looked_up = looked_up
            unpickler.load()
    except Exception as err:  # the unpickler's verdict on arbitrary bytes, whatever it is
        return looked_up, err
    return looked_up, None


def _broke_the_stream(err: Exception | None) -> bool:
    if err is None or isinstance(err, (TypeError, AttributeError, IndexError)):
        return False
    return not _TYPE_COMPLAINTS.search(str(err))


def _assert_scan_covers_the_unpickler(data: bytes, pickles: int = 1) -> None:
    looked_up, err = _unpickle_recording(data, pickles)
    finding = scan_pickle_bytes(data)
    assert finding.file == "<bytes>"
    assert set(looked_up) <= set(finding.imports), (data, looked_up, finding)
    off_list = {name for name in looked_up if name not in SAFE_GLOBALS}
    assert off_list <= set(finding.dangerous), (data, looked_up, finding)
    if off_list:
        assert finding.is_dangerous
    if _broke_the_stream(err):
        assert finding.is_dangerous, (data, err, finding)
    if err is None and pickles == 1:  # read in full, it is no garbage; unless an opcode ran
        # past its frame's end, which `pickle.loads` reads otherwise: unreadable on purpose
        assert finding.error is None or "frame" in finding.error, (data, finding)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_judged_as_the_unpickler_reads_them(data):
    _assert_scan_covers_the_unpickler(data)


_FRAGMENTS = [
    b"\x80\x02", b"\x80\x04", b"\x95\x05\x00\x00\x00\x00\x00\x00\x00",  # PROTO, FRAME
    b"(", b")", b"t", b"\x85", b"R", b"b", b"o", b"\x81", b"\x92", b"0", b"1", b"2", b".",
    b"N", b"K\x07", b"I1\n", b"]", b"}", b"e", b"a", b"u", b"s",
    b"\x94", b"q\x00", b"q\x01", b"r\x02\x00\x00\x00", b"p3\n",  # MEMOIZE, (LONG_)BINPUT, PUT
    b"h\x00", b"h\x01", b"j\x02\x00\x00\x00", b"g3\n",  # BINGET, LONG_BINGET, GET
    b"\x93", b"cos\nsystem\n", b"(ios\nsystem\n", b"ctorch\nSize\n",  # STACK_GLOBAL, GLOBAL, INST
    b"co\\x73\nsystem\n", b"c\xc3\xa9\nx y\n",  # names the unpickler takes verbatim
    b"\x8c\x02os", b"\x8c\x06system", b"X\x0b\x00\x00\x00collections", b"\x8c\x05torch",
    b"\x8c\x0bOrderedDict", b"S'posix'\n", b"Vsystem\n", b"U\x05posix",  # strings of each kind
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=30))
@example([protocol4_stack_global_system("true")])  # module and name fetched back from the memo
def test_opcode_soup_is_judged_as_the_unpickler_reads_it(fragments):
    _assert_scan_covers_the_unpickler(b"".join(fragments))


class _Opaque:
    """Pickled by reference to a global the scanner must name (a class of this test module)."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, _Opaque) and other.value == self.value


_leaf = (st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=8)
         | st.builds(_Opaque, st.integers()) | st.builds(collections.OrderedDict)
         | st.builds(collections.Counter, st.text(max_size=4))
         | st.builds(fractions.Fraction, st.integers(), st.integers(min_value=1))
         | st.dates() | st.decimals(allow_nan=False) | st.complex_numbers(allow_nan=False)
         | st.frozensets(st.integers(), max_size=3) | st.builds(bytearray, st.binary(max_size=4)))
_objects = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_objects, st.integers(0, pickle.HIGHEST_PROTOCOL)),
                min_size=1, max_size=3))
# the second class of a module names that module by a memo read (BINGET) under protocol 4+
@example([([collections.OrderedDict(), collections.Counter("ab")], 4)])
@example([(b"x", 2), ([_Opaque(1), fractions.Fraction(1, 3)], 5)])
def test_generated_pickles_name_every_global_the_unpickler_looks_up(values):
    # One pickle, or several back to back as legacy torch files hold them; real pickles use
    # GLOBAL (protocols 0-3) and STACK_GLOBAL on memoised module names (4-5).
    data = b"".join(pickle.dumps(value, protocol=protocol) for value, protocol in values)
    looked_up, err = _unpickle_recording(data, pickles=len(values))
    assert err is None
    _assert_scan_covers_the_unpickler(data, pickles=len(values))
    assert scan_pickle_bytes(data).error is None


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_truncated_or_corrupted_pickles_are_unreadable_not_safe(protocol):
    data = pickle.dumps({"a": [1, 2.5, "three"], "b": (None, True)}, protocol=protocol)
    assert scan_pickle_bytes(data).is_dangerous is False
    for cut in range(len(data) - 1):
        finding = scan_pickle_bytes(data[: cut + 1])
        assert finding.error is not None and finding.is_dangerous, cut
    for at in range(len(data)):
        corrupted = data[:at] + b"\xff" + data[at + 1:]  # 0xff is no opcode
        _, err = _unpickle_recording(corrupted)
        if _broke_the_stream(err):
            assert scan_pickle_bytes(corrupted).is_dangerous, at


_plain_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner) | st.tuples(inner, inner),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(_plain_data, st.integers(min_value=0, max_value=pickle.HIGHEST_PROTOCOL))
def test_plain_data_pickles_import_nothing(value, protocol):
    finding = scan_pickle_bytes(pickle.dumps(value, protocol=protocol))
    assert finding.imports == [] and finding.error is None
