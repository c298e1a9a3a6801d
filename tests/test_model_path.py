"""A model name is a local path or a hub id, told apart before any loading: a mistyped local
path is one line at once that lists what is there; a hub id is looked up once, briefly, and
a failure says both that it is not a local directory and why the hub did not give it."""

from __future__ import annotations

import huggingface_hub
import pytest

import uldkit.cli.generate_cmd  # noqa: F401  (registers the command these tests run)
from uldkit import cli
from uldkit.cli import main


@pytest.fixture(autouse=True)
def _only_these_commands(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    monkeypatch.chdir(tmp_path)
    # An empty hub cache, so that no earlier download answers for the hub.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def _one_error_line(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(["generate", "--prompt", "Who?", *args])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_mistyped_relative_path_lists_what_its_folder_holds(tmp_path, capsys):
    (tmp_path / "runs" / "target").mkdir(parents=True)
    (tmp_path / "runs" / "notes.txt").write_text("")
    err = _one_error_line(["--model", "runs/nope"], capsys)
    assert err == "error: no model directory runs/nope; runs/ holds: notes.txt, target/"


@pytest.mark.parametrize("name", ["./nope", "~/surely-no-such-dir-uldkit/x", "/nonexistent/m"])
def test_names_starting_with_dot_slash_or_tilde_are_local(name, capsys):
    err = _one_error_line(["--model", name], capsys)
    assert err.startswith(f"error: no model directory {name};")


def test_offline_mode_says_so_at_once(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_error_line(["--model", "someone/no-such-model"], capsys)
    assert err == ("error: 'someone/no-such-model' is not a local directory, and HF_HUB_OFFLINE "
                   "is set, so the hub was not asked")


def test_an_unreachable_hub_is_asked_once_and_named(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Port 9 (discard) on loopback: nothing listens, so every connection is refused.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    err = _one_error_line(["--model", "someone/no-such-model"], capsys)
    assert err.startswith("error: 'someone/no-such-model' is not a local directory, and the "
                          "hub could not be reached")
