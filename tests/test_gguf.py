"""GGUF in: a tiny Llama written as GGUF converts back to the same model, tokenizer and stop ids;
a truncated or foreign file is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from uldkit.cli import main  # noqa: E402
from uldkit.errors import ModelError  # noqa: E402
from uldkit.models.gguf import convert_gguf  # noqa: E402
from uldkit.models.loading import load_model  # noqa: E402
from uldkit.models.tiny import build_tiny_llama  # noqa: E402
from uldkit.models.tokenizer import train_bpe_tokenizer  # noqa: E402

CORPUS = ["Question: Who wrote the book?\nAnswer: Ada Lovelace wrote it.",
          "The river runs north past the old mill and the quiet town."] * 20
TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _permute(weight: torch.Tensor, heads: int) -> np.ndarray:
    # llama.cpp stores q/k rows interleaved per rotary pair; transformers undoes it on load.
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape).numpy())


def write_tiny_gguf(path: Path, *, dtype=np.float32, architecture: str = "llama"):
    """A tiny Llama and its byte-level BPE tokenizer written as a GGUF file; returns both."""
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>",
                                                                "<|end|>"]})
    model = build_tiny_llama(tokenizer, seed=3)
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(len(tokenizer))
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(tokenizer.all_special_tokens)
    merges = [" ".join(m) if isinstance(m, list | tuple) else m for m in
              json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_eot_token_id(tokenizer.convert_tokens_to_ids("<|end|>"))
    writer.add_add_bos_token(True)
    writer.add_chat_template(TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, weight in model.state_dict().items():
        data = weight.detach().float()
        if "q_proj" in name:
            data = torch.from_numpy(_permute(data, config.num_attention_heads))
        elif "k_proj" in name:
            data = torch.from_numpy(_permute(data, config.num_key_value_heads))
        base = name.removesuffix(".weight")
        array = data.numpy().astype(dtype if data.ndim == 2 else np.float32)
        writer.add_tensor(names.get_name(base) + ".weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    model, tokenizer = write_tiny_gguf(path)
    return path, model, tokenizer


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_conversion_round_trip_keeps_logits_tokenizer_and_stop_ids(tiny_gguf, tmp_path):
    path, source, tokenizer = tiny_gguf
    out = convert_gguf(path, tmp_path / "converted")
    assert (out / "model.safetensors").exists()
    model, loaded_tokenizer = load_model(out, device="cpu")
    text = "Question: Who wrote the book?\nAnswer:"
    ids = tokenizer(text)["input_ids"]
    assert loaded_tokenizer(text)["input_ids"] == ids
    torch.testing.assert_close(_logits(model, ids), _logits(source, ids), rtol=1e-5, atol=1e-5)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, end]
    assert loaded_tokenizer.chat_template == TEMPLATE


def test_half_precision_file_converts_within_f16_round_off(tmp_path):
    path = tmp_path / "half.gguf"
    source, tokenizer = write_tiny_gguf(path, dtype=np.float16)
    model, _ = load_model(convert_gguf(path, tmp_path / "out"), device="cpu")
    ids = tokenizer("The river runs north")["input_ids"]
    torch.testing.assert_close(_logits(model, ids), _logits(source, ids), rtol=0, atol=2e-2)


def test_load_model_takes_a_gguf_path_and_converts_once(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("ULDKIT_CACHE", str(tmp_path / "cache"))
    path, source, tokenizer = tiny_gguf
    model, _ = load_model(path, device="cpu")
    converted = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(converted) == 1
    stamp = (converted[0] / "model.safetensors").stat().st_mtime_ns
    load_model(path, device="cpu")
    assert (converted[0] / "model.safetensors").stat().st_mtime_ns == stamp
    ids = tokenizer("Answer: Ada")["input_ids"]
    torch.testing.assert_close(_logits(model, ids), _logits(source, ids), rtol=1e-5, atol=1e-5)


def test_cli_convert_writes_a_model_directory(tiny_gguf, tmp_path):
    path, _, _ = tiny_gguf
    main(["convert", "gguf", str(path), "--out", str(tmp_path / "m")])
    assert (tmp_path / "m" / "config.json").exists()


def test_truncated_file_is_one_line_and_exit_2(tiny_gguf, tmp_path, capsys):
    path, _, _ = tiny_gguf
    data = path.read_bytes()
    for size in (len(data) // 2, 100):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(ModelError):
            convert_gguf(cut, tmp_path / f"out{size}")
        assert not (tmp_path / f"out{size}").exists()
        with pytest.raises(SystemExit) as done:
            main(["convert", "gguf", str(cut), "--out", str(tmp_path / f"cli{size}")])
        assert done.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "truncated" in err, err


def test_unknown_architecture_is_one_line(tmp_path, capsys):
    path = tmp_path / "odd.gguf"
    write_tiny_gguf(path, architecture="frobnicator")
    with pytest.raises(SystemExit) as done:
        main(["convert", "gguf", str(path), "--out", str(tmp_path / "m")])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frobnicator" in err, err
