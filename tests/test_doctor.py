"""`uldkit doctor`: versions, device, extras (and what is missing), resources, and a check of
the built-in data that catches a changed or missing file."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

import uldkit.cli.doctor_cmd  # noqa: F401  (registers the command these tests run)
from uldkit import cli
from uldkit.cli import main


@pytest.fixture(autouse=True)
def _only_this_command(monkeypatch):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)


def _doctor(capsys) -> tuple[list[str], int]:
    try:
        main(["doctor"])
        code = 0
    except SystemExit as done:
        code = done.code
    return capsys.readouterr().out.splitlines(), code


def test_doctor_reports_versions_device_extras_and_resources(monkeypatch, capsys):
    monkeypatch.delenv("ULDKIT_TOFU_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    lines, code = _doctor(capsys)
    text = "\n".join(lines)
    assert code == 0 and lines[-1] == "no problems found"
    assert f"python: {sys.version.split()[0]} " in text
    assert f"torch {torch.__version__}" in text and "transformers " in text
    assert lines[0].startswith("uldkit: 0.")
    assert "\ndevice: cpu (" in text or "\ndevice: cuda (" in text
    assert f"threads: torch uses {torch.get_num_threads()} of " in text
    assert '  datasets: MISSING datasets: pip install "uldkit[datasets]". Unlocks ' in text
    assert "  serve: installed. Unlocks uldkit serve" in text
    assert "disk: " in text and " GiB free at " in text and "memory: " in text
    assert "synthetic world (generated, 40 people, seed 0): ok" in text
    assert "TOFU files: -: not checked: set ULDKIT_TOFU_DIR" in text


def test_doctor_finds_a_changed_and_a_missing_tofu_file(tmp_path, monkeypatch, capsys, tofu_dir):
    copy = tmp_path / "tofu"
    shutil.copytree(tofu_dir, copy, ignore=shutil.ignore_patterns("reference_logs"))
    monkeypatch.setenv("ULDKIT_TOFU_DIR", str(copy))
    lines, code = _doctor(capsys)
    assert code == 0 and "  TOFU files: ok: " in "\n".join(lines)

    forget01 = json.loads((copy / "forget01.json").read_text())
    forget01[3]["answer"] += " (edited)"
    (copy / "forget01.json").write_text(json.dumps(forget01))
    (copy / "aug" / "forget05" / "perturb_res.csv").unlink()
    lines, code = _doctor(capsys)
    assert code == 1 and lines[-1] == "1 problem(s) found"
    assert (f"  TOFU files: PROBLEM: {copy}: missing aug/forget05/perturb_res.csv; "
            "different from the public release: forget01") in lines
