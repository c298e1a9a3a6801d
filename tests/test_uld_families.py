"""ULD on every causal LM: one tiny random model per decoder-only family.

Each family is built from transformers' own config class (2 layers, hidden 32, a 300-token
byte-level BPE vocabulary trained here), saved, and taken through:
- the cut: the assistant with K = 1 gives the logits of a 1-layer model of the same family
  built by transformers from the same weights;
- exactness: with K = N and zero adapters the assistant's logits are the target's, and the
  logit-difference model's greedy output with alpha = 0 is the target's, with and without a
  KV cache;
- ULD through `uldkit unlearn` (two steps), reloaded with `load_language_model`: the same
  greedy check holds for the trained K = 1 assistant, and its scores (alpha 1) from the
  paired pass, where the family takes it, equal those of the two separate passes;
- a baseline (grad_diff, two steps) through the same command.
The models are random: these tests check mechanics and exactness, not forgetting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as hf
from transformers import AutoModelForCausalLM

from uldkit.cli import main
from uldkit.data.collate import position_ids_from_mask
from uldkit.data.formatting import encode_prompt
from uldkit.data.sources import DataSource
from uldkit.errors import ConfigError, ModelError
from uldkit.models.fingerprint import weight_fingerprint
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.models.loading import load_model
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.uld.assistant import ZeroCopyAssistant
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.unlearning.load import load_language_model

pytestmark = pytest.mark.usefixtures("one_thread")

PEOPLE = 10
VOCAB = 300
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)  # train_bpe_tokenizer's order
BASE = dict(**IDS, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=256)
GQA = dict(BASE, num_key_value_heads=2)
GPT = dict(**IDS, vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)

# family -> (config class, settings); each is what its name says, at toy size.
FAMILIES: dict[str, tuple[type, dict[str, Any]]] = {
    "llama": (hf.LlamaConfig, GQA),
    "mistral": (hf.MistralConfig, dict(GQA, sliding_window=4)),
    "mixtral": (hf.MixtralConfig, dict(GQA, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": (hf.Qwen2Config, GQA),
    "qwen2_moe": (hf.Qwen2MoeConfig, dict(GQA, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=32,
                                          shared_expert_intermediate_size=32)),
    "qwen3": (hf.Qwen3Config, dict(GQA, head_dim=8)),
    "qwen3_moe": (hf.Qwen3MoeConfig, dict(GQA, head_dim=8, num_experts=4,
                                          num_experts_per_tok=2, moe_intermediate_size=32)),
    "gemma": (hf.GemmaConfig, dict(GQA, head_dim=8)),
    "gemma2": (hf.Gemma2Config, dict(GQA, head_dim=8, sliding_window=4)),
    "gemma3_text": (hf.Gemma3TextConfig, dict(GQA, head_dim=8, sliding_window=4)),
    "phi": (hf.PhiConfig, BASE),
    "phi3": (hf.Phi3Config, GQA),
    "gpt2": (hf.GPT2Config, GPT),
    "gpt_neox": (hf.GPTNeoXConfig, BASE),
    "opt": (hf.OPTConfig, dict(**IDS, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, ffn_dim=64, max_position_embeddings=256,
                               word_embed_proj_dim=32)),
    "falcon": (hf.FalconConfig, dict(**IDS, vocab_size=VOCAB, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4)),
    "falcon_alibi": (hf.FalconConfig, dict(**IDS, vocab_size=VOCAB, hidden_size=32,
                                           num_hidden_layers=2, num_attention_heads=4,
                                           alibi=True)),
    "bloom": (hf.BloomConfig, dict(**IDS, vocab_size=VOCAB, hidden_size=32, n_layer=2,
                                   n_head=4)),
    "olmo": (hf.OlmoConfig, GQA),
    "olmo2": (hf.Olmo2Config, GQA),
    "granite": (hf.GraniteConfig, dict(GQA, embedding_multiplier=2.0, logits_scaling=4.0,
                                       residual_multiplier=0.5, attention_multiplier=0.3)),
    "starcoder2": (hf.Starcoder2Config, dict(GQA, sliding_window=4)),
    "stablelm": (hf.StableLmConfig, GQA),
    "gptj": (hf.GPTJConfig, dict(GPT, rotary_dim=4)),
    "cohere": (hf.CohereConfig, GQA),
    "mpt": (hf.MptConfig, dict(**IDS, vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4,
                               expansion_ratio=2, max_seq_len=256)),
    "gpt_bigcode": (hf.GPTBigCodeConfig, GPT),
    "smollm3": (hf.SmolLM3Config, GQA),
}
# Families whose code cannot take the doubled batch of the paired pass past layer K: they
# run the two passes (checked on the model, not listed anywhere in uldkit).
TWO_PASSES = {"bloom"}  # ALiBi handed to each layer as [batch x heads, 1, keys]
UNLEARN_ARGS = ["--people", str(PEOPLE), "--forget", "forget10", "--epochs", "1",
                "--max-length", "128", "--device", "cpu"]


def _config(family: str, layers: int | None = None) -> Any:
    kind, settings = FAMILIES[family]
    if layers is not None:
        settings = {k: (layers if k in ("num_hidden_layers", "n_layer", "n_layers") else v)
                    for k, v in settings.items()}
    return kind(**settings)


@pytest.fixture(scope="module")
def tokenizer():
    source = DataSource("synthetic", people=PEOPLE)
    texts = [t for p in source.load("full") for t in (p.question, p.answer)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=VOCAB)
    assert len(tokenizer) == VOCAB
    return tokenizer


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    questions = [p.question for p in DataSource("synthetic", people=PEOPLE).load("forget10")]
    return [encode_prompt(tokenizer, q) for q in questions[:2]]


def _left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def _logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask,
                     position_ids=position_ids_from_mask(mask)).logits


def _greedy_without_cache(lm: LanguageModel, prompts: list[list[int]], steps: int,
                          eos: int) -> list[list[int]]:
    """Greedy decoding by a full forward over the whole sequence at every step."""
    rows = [list(p) for p in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(steps):
        ids, mask = _left_padded(rows)
        with torch.no_grad():
            chosen = lm.logits(ids, mask)[:, -1].argmax(-1).tolist()
        for i, token in enumerate(chosen):
            done[i] = done[i] or token == eos
            if not done[i]:
                outputs[i].append(token)
            rows[i].append(token)
    return outputs


def _greedy_both_ways(lm: LanguageModel, prompts: list[list[int]]) -> list[list[int]]:
    cached = generate_ids(lm, prompts, GenerationSettings(max_new_tokens=6))
    assert cached == _greedy_without_cache(lm, prompts, 6, lm.tokenizer.eos_token_id)
    return cached


def _saved_model(family: str, tokenizer, root: Path) -> Path:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(family))
    model.save_pretrained(root / family)
    tokenizer.save_pretrained(root / family)
    return root / family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_uld_on_family(family, tokenizer, prompts, tmp_path_factory):
    root = tmp_path_factory.mktemp(family)
    target_dir = _saved_model(family, tokenizer, root)
    ids, mask = _left_padded(prompts)
    real = mask.bool()

    # The cut: K = 1 is a 1-layer model of this family, as transformers builds it.
    model, _ = load_model(str(target_dir), device="cpu")
    full = _logits(model, ids, mask)
    one_layer = AutoModelForCausalLM.from_config(_config(family, layers=1)).eval()
    one_layer.load_state_dict(model.state_dict(), strict=False)
    cut = ZeroCopyAssistant(model, 1).eval()
    assert (_logits(cut, ids, mask) - _logits(one_layer, ids, mask))[real].abs().max() < 1e-5
    assert (_logits(cut.target_pass(), ids, mask) - full)[real].abs().max() < 1e-5

    # Exactness: K = N with zero adapters is the target.
    model, _ = load_model(str(target_dir), device="cpu")
    whole = ZeroCopyAssistant(model, len(cut.stack)).eval()
    assert (_logits(whole, ids, mask) - full)[real].abs().max() < 1e-5
    target = load_language_model(str(target_dir))
    expected = _greedy_both_ways(target, prompts)
    assert _greedy_both_ways(LogitDifferenceModel(whole, tokenizer, alpha=0.0), prompts) == expected

    # ULD through the command, reloaded as users load it.
    out = root / "uld"
    main(["unlearn", "--method", "uld", "--model", str(target_dir), "--out", str(out),
          *UNLEARN_ARGS, "--batch-size", "16", "--param", "retain_count=8", "--lr", "1e-2"])
    uld = load_language_model(str(out), alpha=0.0)
    assert isinstance(uld, LogitDifferenceModel) and uld.assistant.num_layers == 1
    assert any(p.abs().sum() > 0 for n, p in uld.assistant.named_parameters() if "lora_B" in n)
    assert uld.assistant.supports_paired_forward == (family not in TWO_PASSES)
    assert _greedy_both_ways(uld, prompts) == expected
    unlearned = uld.with_settings(alpha=1.0, tau=0.0)
    separate = LogitCombination(unlearned.members, unlearned.combine, tokenizer, uld.device)
    with torch.no_grad():
        got, expected = unlearned.logits(ids, mask), separate.logits(ids, mask)
    assert (got - expected)[real].abs().max() < 1e-4
    assert not torch.allclose(got[real], torch.log_softmax(_logits(target.model, ids, mask),
                                                           -1)[real], atol=1e-3)
    assert len(generate_ids(unlearned, prompts, GenerationSettings(max_new_tokens=4))) == 2

    # A baseline through the same command edits the weights and still generates.
    baseline = root / "grad_diff"
    main(["unlearn", "--method", "grad_diff", "--model", str(target_dir),
          "--out", str(baseline), *UNLEARN_ARGS, "--batch-size", "5", "--grad-accum", "1"])
    edited = load_language_model(str(baseline))
    assert isinstance(edited, CausalLM)
    assert weight_fingerprint(edited.model) != weight_fingerprint(target.model)
    assert len(generate_ids(edited, prompts, GenerationSettings(max_new_tokens=4))) == 2


def test_uld_refuses_what_is_not_a_causal_lm_or_too_deep(tokenizer, tmp_path_factory, capsys):
    target_dir = _saved_model("llama", tokenizer, tmp_path_factory.mktemp("llama"))
    model, _ = load_model(str(target_dir), device="cpu")
    for layers in (0, 3):
        with pytest.raises(ConfigError, match="between 1 and 2"):
            ZeroCopyAssistant(model, layers)
    with pytest.raises(ModelError, match="T5ForConditionalGeneration .model type 't5'."):
        ZeroCopyAssistant(hf.T5ForConditionalGeneration(hf.T5Config(
            vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)))
    out = tmp_path_factory.mktemp("deep") / "uld"
    capsys.readouterr()  # the fixtures' own save progress bars
    for layers in ("2", "0"):
        with pytest.raises(SystemExit) as exit_info:
            main(["unlearn", "--method", "uld", "--model", str(target_dir), "--out", str(out),
                  *UNLEARN_ARGS, "--param", f"assistant_layers={layers}"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        expected = ("assistant_layers must be between 1 and 1" if layers == "2"
                    else "'assistant_layers' of method 'uld' must be >= 1")  # the schema's bound
        assert expected in error and len(error.splitlines()) == 1
