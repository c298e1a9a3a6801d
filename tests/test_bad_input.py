"""Hostile and broken input, end to end: one clear line, exit code 2, and no output left
behind; oversized fields are cut with a warning; odd tokenizers and broken models are
handled (see also test_data_tofu.py for the loaders' messages, test_uld.py for mismatched
assistants at load time, test_serve.py for a NaN row while serving)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import uldkit.cli.eval_tofu_cmd  # noqa: F401  (registers the commands these tests run)
import uldkit.cli.finetune_cmd  # noqa: F401
import uldkit.cli.generate_cmd  # noqa: F401
import uldkit.cli.unlearn_cmd  # noqa: F401
from uldkit import cli
from uldkit.cli import main
from uldkit.data.formatting import encode_prompt
from uldkit.data.sources import DataSource
from uldkit.errors import ConfigError, ModelError
from uldkit.eval.tofu_eval import evaluate_tofu
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.loading import load_model, save_model
from uldkit.models.scoring import answer_losses
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig
from uldkit.unlearning.catalog import get_method
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, load_unlearn_data, unlearn


@pytest.fixture(autouse=True)
def _only_these_commands(monkeypatch):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)


def _record(i: int, question: str | None = None, answer: str | None = None) -> dict:
    return {"question": question or f"Where was writer {i} born?",
            "answer": answer or f"Writer {i} was born in town {i}.",
            "paraphrased_answer": f"Town {i} is where writer {i} was born.",
            "perturbed_answer": [f"Writer {i} was born in city {i + 7}.",
                                 f"Writer {i} was born at sea."]}


def _tofu_dir(root, forget=None, retain=None):
    """A small folder in TOFU's layout: every file the commands below read."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"forget10": forget or [_record(i) for i in range(3)],
             "retain90": retain or [_record(i) for i in range(3, 7)],
             "retain_perturbed": [_record(i) for i in range(3, 6)],
             "real_authors_perturbed": [_record(i) for i in range(10, 12)],
             "world_facts_perturbed": [_record(i) for i in range(12, 14)]}
    for name, records in files.items():
        (root / f"{name}.json").write_text(json.dumps(records))
    return root


GOOD_JSONL = "\n".join(json.dumps(_record(i)) for i in range(3))
FAULTS = {
    "truncated JSON": ("forget10.json", b'[{"question": "Where?", "answer": "Th',
                       "forget10.json line 1 column 35: invalid JSON (Unterminated string starting at) "
                       "(the file ends early: truncated?)"),
    "JSONL bad line": ("forget10.jsonl", (GOOD_JSONL + '\n{"question": "Q?",\n').encode(),
                       "forget10.jsonl line 4: invalid JSON"),
    "wrong field type": ("forget10.json", json.dumps([_record(0), {**_record(1), "answer": 5}])
                         .encode(), "record 2: field 'answer' must be a string, got a number"),
    "empty string": ("forget10.json", json.dumps([{**_record(0), "question": "  "}]).encode(),
                     "record 1: field 'question' is empty"),
    "non-UTF-8 bytes": ("forget10.json", json.dumps([_record(0)]).encode()[:20] + b"\xff\xfe"
                        + json.dumps([_record(0)]).encode()[20:],
                        "forget10.json line 1: not valid UTF-8 (byte offset 20)"),
}


def _commands(target, data, out):
    return {
        "finetune": ["finetune", "--data", str(data), "--split", "forget10", "--no-general",
                     "--epochs", "1", "--vocab-size", "300", "--out", str(out)],
        "unlearn": ["unlearn", "--method", "grad_diff", "--model", str(target), "--data",
                    str(data), "--forget", "forget10", "--epochs", "1", "--out", str(out)],
        "eval tofu": ["eval", "tofu", "--model", str(target), "--data", str(data), "--split",
                      "forget10", "--max-new-tokens", "2", "--quiet", "--out", str(out)],
    }


def _fails_in_one_line(args, capsys, *expected) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("command", ["finetune", "unlearn", "eval tofu"])
def test_bad_data_file_is_one_line_exit_2_and_leaves_no_output(trained_world, tmp_path, capsys,
                                                               command, fault):
    data = _tofu_dir(tmp_path / "data")
    name, content, message = FAULTS[fault]
    (data / "forget10.json").unlink()
    (data / name).write_bytes(content)
    out = tmp_path / "out"
    _fails_in_one_line(_commands(trained_world.target, data, out)[command], capsys,
                       str(data / name), message)
    assert not out.exists()


def test_malformed_python_literal_in_augmentation_csv(trained_world, tmp_path, capsys):
    data = _tofu_dir(tmp_path / "data")
    aug = data / "aug" / "forget10"
    aug.mkdir(parents=True)
    question, answer = _record(0)["question"], _record(0)["answer"]
    (aug / "paraphrase_res.csv").write_text(
        f'"{question}","{answer}","[\'Where was he born?\']","[\'In town 0\', oops]"\n')
    (aug / "perturb_res.csv").write_text(f'"{question}","{answer}","x","[\'In a lake.\']"\n')
    out = tmp_path / "out"
    _fails_in_one_line(["unlearn", "--method", "uld", "--model", str(trained_world.target),
                        "--data", str(data), "--forget", "forget10", "--out", str(out)], capsys,
                       f"{aug / 'paraphrase_res.csv'} row 1 column 4: malformed Python list "
                       "literal")
    assert not out.exists()


@pytest.mark.parametrize("command", ["finetune", "unlearn", "eval tofu"])
def test_overwrite_with_bad_input_keeps_the_old_run(trained_world, tmp_path, capsys, command):
    data = _tofu_dir(tmp_path / "data")
    (data / "world_facts_perturbed.json").write_bytes(b'[{"question": "Q?", "answer": 1}]')
    (data / "retain90.json").write_bytes(b"\xff")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("an earlier run's weights")
    args = [*_commands(trained_world.target, data, out)[command], "--overwrite"]
    _fails_in_one_line(args, capsys, str(data))
    assert (out / "model.safetensors").read_text() == "an earlier run's weights"


def test_forget_set_overlapping_the_retain_set_is_warned_with_counts(tmp_path):
    data = _tofu_dir(tmp_path / "data",
                     retain=[_record(i) for i in range(1, 7)])  # writers 1 and 2 in both
    config = UnlearnConfig(method="grad_diff", model="unused", out="unused", data=str(data))
    with pytest.warns(UserWarning, match="2 of 3 forget questions also appear in the retain "
                                         "set 'retain90'; they are removed from the retain"):
        loaded = load_unlearn_data(config, get_method("grad_diff"))
    assert len(loaded.forget) == 3 and len(loaded.retain) == 4
    assert not loaded.forget.questions() & loaded.retain.questions()


def test_extremely_long_fields_are_cut_to_max_length_with_a_warning(tmp_path):
    long_answer = " ".join(f"word{i}" for i in range(3000))
    long_question = "Tell me, " + " ".join(f"clause{i}," for i in range(3000)) + " where?"
    data = _tofu_dir(tmp_path / "data", forget=[
        _record(0), _record(1, answer=long_answer), _record(2, question=long_question)])
    with pytest.warns(UserWarning) as caught:
        finetune(FinetuneConfig(
            out=str(tmp_path / "model"), data=str(data), splits=["forget10"],
            include_general=False, vocab_size=300, max_length=96,
            train=TrainConfig(epochs=1, batch_size=4, show_progress=False)))
    messages = [str(w.message) for w in caught]
    assert any("1 of 3 question/answer pairs were longer than max_length 96" in m
               for m in messages), messages
    assert any("exceeds max_length 96; keeping its last tokens" in m for m in messages)

    lm = load_language_model(tmp_path / "model")
    with pytest.warns(UserWarning) as caught:
        log, summary = evaluate_tofu(lm, DataSource(str(data)), "forget10", max_length=96,
                                     max_new_tokens=2, show_progress=False)
    messages = [str(w.message) for w in caught]
    assert any("1 of 3 questions are longer than max_length 96" in m for m in messages), messages
    assert any("exceeds max_length 96; keeping its last tokens" in m for m in messages)
    assert np.isfinite(list(log["eval_log_forget.json"]["avg_gt_loss"].values())).all()
    assert 0 <= summary.figures.model_utility <= 1


def _without_special_tokens(model_dir, target_dir, *tokens):
    shutil.copytree(model_dir, target_dir, ignore=shutil.ignore_patterns("checkpoints"))
    config_file = target_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    for token in tokens:
        config.pop(token, None)
    config_file.write_text(json.dumps(config))
    special = target_dir / "special_tokens_map.json"
    if special.exists():
        kept = {k: v for k, v in json.loads(special.read_text()).items() if k not in tokens}
        special.write_text(json.dumps(kept))
    return target_dir


def test_tokenizer_without_pad_token_pads_with_eos(trained_world, tmp_path, capsys):
    no_pad = _without_special_tokens(trained_world.target, tmp_path / "no_pad", "pad_token")
    model, tokenizer = load_model(no_pad)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None
    # Padding is masked out: scores are those of the tokenizer with its own pad token.
    pairs = trained_world.source.load("forget10")[:6]
    questions, answers = [p.question for p in pairs], [p.answer for p in pairs]
    original = load_language_model(trained_world.target)
    padded_with_eos = load_language_model(no_pad)
    for side in ("left", "right"):
        np.testing.assert_allclose(
            answer_losses(padded_with_eos, questions, answers, 4, padding_side=side),
            answer_losses(original, questions, answers, 4, padding_side=side), atol=1e-5)
    # Unlearning and fine-tuning from it run as usual.
    unlearn(UnlearnConfig(method="grad_diff", model=str(no_pad), out=str(tmp_path / "u"),
                          people=trained_world.people,
                          train_overrides={"max_steps": 2, "show_progress": False}),
            show_progress=False)
    assert (tmp_path / "u" / "model.safetensors").is_file()
    finetune(FinetuneConfig(out=str(tmp_path / "f"), base_model=str(no_pad),
                            people=trained_world.people, splits=["forget10"],
                            include_general=False,
                            train=TrainConfig(max_steps=1, show_progress=False)))
    assert (tmp_path / "f" / "model.safetensors").is_file()

    # Neither pad nor EOS: refused in one line, before any output.
    neither = _without_special_tokens(no_pad, tmp_path / "neither", "eos_token")
    out = tmp_path / "eval"
    _fails_in_one_line(["eval", "tofu", "--model", str(neither), "--people", "20", "--out",
                        str(out)], capsys, "has neither a pad nor an EOS token")
    assert not out.exists()


def _poisoned(target_dir, question):
    """The target with NaN embeddings for a token that only `question` uses."""
    model, tokenizer = load_model(target_dir)
    healthy = set(encode_prompt(tokenizer, "Where was writer 1 born?"))
    bad_token = next(t for t in encode_prompt(tokenizer, question) if t not in healthy)
    with torch.no_grad():
        model.get_input_embeddings().weight[bad_token] = float("nan")
    return model, tokenizer


def test_generation_with_a_nan_score_row_fails_cleanly(trained_world, tmp_path, capsys):
    model, tokenizer = _poisoned(trained_world.target, "Zyxquv?")
    lm = load_language_model(trained_world.target)
    lm.model = model
    prompts = [encode_prompt(tokenizer, q) for q in ("Where was writer 1 born?", "Zyxquv?")]
    with pytest.raises(ModelError, match="batch row 1 are NaN or all -inf"):
        generate_ids(lm, prompts, GenerationSettings(max_new_tokens=4))
    assert generate_ids(lm, prompts[:1], GenerationSettings(max_new_tokens=4))  # others fine

    save_model(model, tokenizer, tmp_path / "poisoned")
    _fails_in_one_line(["generate", "--model", str(tmp_path / "poisoned"), "--prompt",
                        "Zyxquv?", "--max-new-tokens", "4"], capsys, "NaN or all -inf")


def test_continuing_an_assistant_on_another_target_is_refused(trained_world, tmp_path, capsys):
    uld_dir = tmp_path / "uld"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(uld_dir),
                          people=trained_world.people,
                          train_overrides={"max_steps": 1, "show_progress": False}),
            show_progress=False)
    out = tmp_path / "continued"
    _fails_in_one_line(["unlearn", "--method", "uld", "--model", str(trained_world.retain),
                        "--assistant", str(uld_dir), "--people", "20", "--out", str(out)],
                       capsys, "does not belong to the target", "weights differ")
    assert not out.exists()


def test_generation_cuts_a_prompt_longer_than_the_context(trained_world):
    lm = load_language_model(trained_world.target)
    context = lm.model.config.max_position_embeddings
    question = encode_prompt(lm.tokenizer, "Where was the author born?")
    too_long = question * (context // len(question) + 2)
    settings = GenerationSettings(max_new_tokens=8)
    with pytest.warns(UserWarning, match=f"1 of 2 prompts are too long for 8 new tokens in a "
                                         f"context of {context}"):
        long_out, short_out = generate_ids(lm, [too_long, question], settings)
    assert long_out == generate_ids(lm, [too_long[-(context - 8):]], settings)[0]
    assert short_out == generate_ids(lm, [question], settings)[0]
    with pytest.raises(ConfigError, match="leaves no room for a prompt"):
        generate_ids(lm, [question], GenerationSettings(max_new_tokens=context))


def test_eval_with_a_retain_model_that_fails_to_load_leaves_no_output(trained_world, tmp_path,
                                                                      capsys):
    broken = tmp_path / "retain"
    shutil.copytree(trained_world.retain, broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "out"
    args = _commands(trained_world.target, _tofu_dir(tmp_path / "data"), out)["eval tofu"]
    _fails_in_one_line([*args, "--retain-logs", str(broken)], capsys, str(broken),
                       "a safetensors weights file is damaged or truncated")
    assert not out.exists()
