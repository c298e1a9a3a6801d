"""Losses from the output head at answer positions only equal the full-vocabulary computation,
whatever the family does after its head (Gemma 2 soft-capping, Granite logit scaling)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from uldkit.data.collate import collate, token_nll
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.methods.editing import sequence_logprob, token_kl
from uldkit.training.losses import answer_logits, forward_logits, stream_token_nll
from uldkit.uld.method import uniform_kl

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)


def _models():
    yield "llama", LlamaForCausalLM(LlamaConfig(**SMALL))
    yield "gemma2", Gemma2ForCausalLM(Gemma2Config(**SMALL, head_dim=8,
                                                   final_logit_softcapping=2.0))
    yield "granite", GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=4.0))
    yield "gpt2", GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                             n_positions=64))


def _stream(padding_side: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for prompt, answer in ((7, 3), (4, 6), (9, 1)):
        ids = torch.randint(3, VOCAB, (prompt + answer,), generator=generator).tolist()
        examples.append(Encoded(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return collate(examples, pad_token_id=0, padding_side=padding_side)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("name,model", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_answer_only_losses_equal_full_ones(name, model, padding_side):
    torch.manual_seed(1)
    model.eval()
    stream = _stream(padding_side)
    full, labels = forward_logits(model, stream), stream["labels"]
    logits, compact = answer_logits(model, stream)
    assert logits.shape[1] < full.shape[1]
    full_nll, full_mask = token_nll(full, labels)
    nll, mask = stream_token_nll(model, stream)
    assert int(mask.sum()) == int(full_mask.sum())
    torch.testing.assert_close(nll.sum(), full_nll.sum(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sequence_logprob(logits, compact), sequence_logprob(full, labels),
                               rtol=1e-6, atol=1e-5)
    shifted = full + torch.linspace(0, 1, VOCAB)
    kl_full, _ = token_kl(shifted, full, labels)
    kl, _ = token_kl(answer_logits_of(shifted, stream), logits, compact)
    torch.testing.assert_close(kl.sum(), kl_full.sum(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(uniform_kl(logits, compact).sum(), uniform_kl(full, labels).sum(),
                               rtol=1e-6, atol=1e-5)


def answer_logits_of(full: torch.Tensor, stream: dict[str, torch.Tensor]) -> torch.Tensor:
    """What `answer_logits` gives for a model whose logits are `full`."""
    class Fixed(torch.nn.Module):
        def forward(self, **_inputs):
            return type("Out", (), {"logits": full})()
    return answer_logits(Fixed(), stream)[0]


def test_gradients_equal_full_ones():
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    stream = _stream("right")
    token_nll(forward_logits(model, stream), stream["labels"])[0].sum().backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    stream_token_nll(model, stream)[0].sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, full[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name,model", [m for m in _models() if m[0] in ("gemma2", "gpt2")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_uld_assistant_runs_its_head_at_answer_positions_only(name, model):
    from uldkit.uld.assistant import AssistantLora, ZeroCopyAssistant

    assistant = ZeroCopyAssistant(model, num_layers=1, lora=AssistantLora(r=2, alpha=4,
                                                                          dropout=0.0))
    assistant.eval()
    stream = _stream("left")
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: head_rows.append(args[0].shape[1]))
    try:
        full, labels = forward_logits(assistant, stream), stream["labels"]
        nll, mask = stream_token_nll(assistant, stream)
    finally:
        hook.remove()
    answer_positions = int((labels[:, 1:] != IGNORE_INDEX).any(0).sum())
    assert head_rows == [labels.shape[1], answer_positions]
    full_nll, _ = token_nll(full, labels)
    torch.testing.assert_close(nll.sum(), full_nll.sum(), rtol=1e-6, atol=1e-5)
