"""Hostile data and model files: refused with one line before anything large is built."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from uldkit.data.documents import load_documents
from uldkit.data.limits import DEFAULT_FIELD_CHARS
from uldkit.data.sources import DataSource
from uldkit.errors import ConfigError, DataError, ModelError
from uldkit.models.config_check import available_memory, estimated_parameters
from uldkit.models.loading import load_model

TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 768,
              "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 256}


def _qa_file(tmp_path, answer: str):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": "Who?", "answer": "Someone."}, {"question": "What?", "answer": answer}]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_an_overlong_answer_is_refused_naming_file_row_field_and_limit(tmp_path,
                                                                       monkeypatch) -> None:
    monkeypatch.delenv("ULDKIT_MAX_FIELD_CHARS", raising=False)
    path = _qa_file(tmp_path, "x" * (DEFAULT_FIELD_CHARS + 1))
    with pytest.raises(DataError) as refused:
        DataSource(str(path)).load("qa")
    message = str(refused.value)
    assert f"{path} line 2" in message and "'answer'" in message
    assert f"{DEFAULT_FIELD_CHARS:,}" in message and "ULDKIT_MAX_FIELD_CHARS" in message
    assert "\n" not in message

    monkeypatch.setenv("ULDKIT_MAX_FIELD_CHARS", str(DEFAULT_FIELD_CHARS + 1))
    assert len(DataSource(str(path)).load("qa").pairs[1].answer) == DEFAULT_FIELD_CHARS + 1
    monkeypatch.setenv("ULDKIT_MAX_FIELD_CHARS", "lots")
    with pytest.raises(ConfigError, match="ULDKIT_MAX_FIELD_CHARS"):
        DataSource(str(path)).load("qa")


def test_perturbed_answers_and_documents_have_limits_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ULDKIT_MAX_FIELD_CHARS", "50")
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"question": "Who?", "answer": "A.",
                                 "perturbed_answer": ["B.", "y" * 51]}]))
    with pytest.raises(DataError, match=r"record 1: field 'perturbed_answer\[2\]' has 51"):
        DataSource(str(path)).load("qa")

    monkeypatch.setenv("ULDKIT_MAX_DOCUMENT_CHARS", "1000")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "short"}) + "\n" + json.dumps({"text": "z" * 1001}))
    with pytest.raises(DataError, match=r"docs.jsonl line 2: field 'text' has 1,001 .*"
                                        r"ULDKIT_MAX_DOCUMENT_CHARS"):
        load_documents(docs)
    book = tmp_path / "book.txt"
    book.write_text("w" * 1001)
    with pytest.raises(DataError, match="book.txt: field 'text' has 1,001"):
        load_documents(book)


def _model_dir(tmp_path, config: object | str):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (model / "config.json").write_text(text)
    save_file({"lm_head.weight": torch.zeros(2, 2)}, str(model / "model.safetensors"))
    return model


@pytest.mark.parametrize("change", [{"hidden_size": 10**9}, {"num_hidden_layers": 10**9},
                                    {"vocab_size": 10**12}])
def test_a_config_too_large_for_memory_is_refused_before_allocating(tmp_path, change) -> None:
    model = _model_dir(tmp_path, {**TINY_LLAMA, **change})
    with pytest.raises(ModelError) as refused:
        load_model(model, device="cpu")
    message = str(refused.value)
    assert "GiB of weights" in message and "config.json" in message and "\n" not in message


def test_the_estimate_is_a_lower_bound_for_a_real_model() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k not in
                            ("model_type", "architectures")})
    real = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    estimate = estimated_parameters(config.to_dict())
    assert real / 2 < estimate <= real
    assert available_memory() is not None and available_memory() > 0


@pytest.mark.parametrize("text, phrase", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"hidden_size": "big"}', "'hidden_size' must be a positive whole number"),
    ('{"num_hidden_layers": -3, "hidden_size": 8}', "'num_hidden_layers' must be a positive"),
    ('["a list"]', "must hold a JSON object"),
    ('{"hidden_size": 8,', "line 1 column"),
], ids=["nested", "text size", "negative", "list", "truncated"])
def test_a_malformed_config_is_one_line(tmp_path, text, phrase) -> None:
    model = _model_dir(tmp_path, text)
    with pytest.raises(ModelError) as refused:
        load_model(model, device="cpu")
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


def test_the_cli_prints_one_line_and_exits_2_for_a_nested_config(tmp_path, capsys) -> None:
    from uldkit.cli import main

    model = _model_dir(tmp_path, "{" + '"a":{' * 50_000 + "}" * 50_001)
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", str(model)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "config.json" in err and "Traceback" not in err and len(err.splitlines()) == 1
