"""`uldkit scan` judges files by their bytes: a renamed pickle is still found, and a file of no
known format is reported as unclassified instead of the directory being called safe."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import uldkit.cli.scan_cmd  # noqa: F401  (registers `uldkit scan`)
from uldkit import cli
from uldkit.models.scan import scan_model_dir


class _RunsCommand:
    """Unpickling this calls os.system; the tests only ever write it, never load it."""

    def __reduce__(self):
        return (os.system, ("true",))


def _model_dir(tmp_path, files: dict[str, bytes | str]):
    model = tmp_path / "model"
    model.mkdir()
    save_file({"weight": torch.zeros(2, 3)}, str(model / "model.safetensors"))
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    for name, content in files.items():
        path = model / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return model


def _dangerous_files(report) -> dict[str, list[str]]:
    return {f.file: f.dangerous for f in report.pickle_files if f.is_dangerous}


@pytest.mark.parametrize("name", ["weights.dat", "pytorch_model.bin.bak", "notes.txt", "blob"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_renamed_pickle_is_found_whatever_its_name(tmp_path, name, protocol) -> None:
    model = _model_dir(tmp_path, {name: pickle.dumps(_RunsCommand(), protocol=protocol)})
    report = scan_model_dir(model)
    assert "posix.system" in _dangerous_files(report)[name] or \
        "os.system" in _dangerous_files(report)[name]
    assert not report.is_safe
    assert report.summary_lines()[-1] == "verdict: found dangerous pickle"


def test_a_torch_zip_checkpoint_under_another_name_is_listed_as_pickle(tmp_path) -> None:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    model = _model_dir(tmp_path, {"checkpoint.data": buffer.getvalue()})
    report = scan_model_dir(model)
    [finding] = report.pickle_files
    assert finding.file == "checkpoint.data" and not finding.is_dangerous
    assert finding.imports and not report.is_safe


def test_numpy_object_arrays_are_pickles_and_plain_arrays_are_not(tmp_path) -> None:
    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=True)
        return buffer.getvalue()

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as npz:
        npz.writestr("plain.npy", npy(np.arange(3)))
        npz.writestr("objects.npy", npy(np.array([_RunsCommand()], dtype=object)))
    model = _model_dir(tmp_path, {
        "embeddings.npy": npy(np.ones((2, 2), dtype=np.float32)),
        "cache.bin2": npy(np.array([_RunsCommand()], dtype=object)),
        "bundle.npz": archive.getvalue(),
    })
    report = scan_model_dir(model)
    dangerous = _dangerous_files(report)
    assert set(dangerous) == {"cache.bin2", "bundle.npz/objects.npy"}
    assert all(any(name.endswith(".system") for name in found) for found in dangerous.values())
    assert "embeddings.npy" not in {f.file for f in report.pickle_files}
    assert report.unclassified == []


def test_unknown_binary_is_reported_and_the_directory_is_not_called_safe(tmp_path) -> None:
    blob = bytes(range(256)) * 8
    model = _model_dir(tmp_path, {"extra/blob.xyz": blob})
    report = scan_model_dir(model)
    assert report.unclassified == ["extra/blob.xyz"]
    assert not report.is_safe and report.to_dict()["unclassified_files"] == ["extra/blob.xyz"]
    assert any(line.startswith("unclassified: extra/blob.xyz") for line in report.summary_lines())
    assert report.summary_lines()[-1] == "verdict: found 1 file(s) it could not classify"

    result = CliRunner().invoke(cli.app, ["scan", str(model)])
    assert result.exit_code == 1 and "could not classify" in result.output


def test_known_formats_under_any_name_keep_a_directory_safe(tmp_path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4))
    tensors = tmp_path / "t.safetensors"
    save_file({"x": torch.ones(3)}, str(tensors))
    model = _model_dir(tmp_path, {
        "README.md": "copy this\nand that\nthen run it",  # starts like a GLOBAL opcode
        "weights.dat": tensors.read_bytes(),  # safetensors, whatever the name
        "vectors.data": buffer.getvalue(),
        "tokenizer.model": bytes(range(1, 200)),  # sentencepiece protobuf, known by name
        "empty.txt": b"",
        "model.gguf": b"GGUF" + bytes(60),
    })
    report = scan_model_dir(model)
    assert report.pickle_files == [] and report.unclassified == []
    assert report.is_safe, report.summary_lines()
    assert CliRunner().invoke(cli.app, ["scan", str(model)]).exit_code == 0


def test_a_file_named_safetensors_that_is_a_pickle_is_a_pickle(tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(pickle.dumps(_RunsCommand(), protocol=4))
    (model / "config.json").write_text("{}")
    report = scan_model_dir(model)
    assert report.safetensors_files == []
    assert list(_dangerous_files(report)) == ["model.safetensors"]
