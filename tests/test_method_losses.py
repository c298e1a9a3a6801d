"""The baseline unlearning losses on hand-computable cases, and their plumbing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError
from uldkit.methods.activations import activation_mse, control_vector
from uldkit.methods.dpo import dpo_loss
from uldkit.methods.editing import frozen_copy, sequence_logprob, token_kl
from uldkit.methods.npo import npo_loss
from uldkit.methods.simnpo import simnpo_loss
from uldkit.methods.undial import soft_cross_entropy, undial_targets
from uldkit.training.trainer import StreamData, TrainConfig, Trainer
from uldkit.uld.offset import offset_scores
from uldkit.unlearning.catalog import get_method

LOG2 = math.log(2)


# ---- pure loss functions -------------------------------------------------------------------
def test_npo_at_the_reference_is_two_over_beta_log_two():
    logprob = torch.tensor([-3.0, -12.5, -0.2])
    for beta in (0.1, 1.0):
        loss = npo_loss(logprob, logprob.clone(), beta)
        assert torch.allclose(loss, torch.full((3,), 2 / beta * LOG2))


def test_npo_known_value_and_decay():
    # log-ratio -10 at beta 0.1: -(20) * log sigmoid(1) = 20 * log(1 + e^-1)
    loss = npo_loss(torch.tensor([-15.0]), torch.tensor([-5.0]), 0.1)
    assert loss.item() == pytest.approx(20 * math.log1p(math.exp(-1)), rel=1e-6)
    # the less likely the forget answer becomes, the smaller (and never negative) the loss
    ratios = torch.tensor([0.0, -10.0, -50.0, -500.0])
    values = npo_loss(ratios, torch.zeros(4), 0.1)
    assert (values[1:] < values[:-1]).all() and (values >= 0).all()


def test_dpo_at_the_reference_and_with_a_margin():
    a, b = torch.tensor([-4.0, -9.0]), torch.tensor([-7.0, -1.0])
    at_ref = dpo_loss(a, a.clone(), b, b.clone(), beta=0.1)
    assert torch.allclose(at_ref, torch.full((2,), 20 * LOG2))
    # refusal up by 5 nats, forget answer down by 5: margin 10, beta * margin = 1
    moved = dpo_loss(a + 5, a, b - 5, b, beta=0.1)
    assert torch.allclose(moved, torch.full((2,), 20 * math.log1p(math.exp(-1))))


def test_simnpo_on_a_constructed_distribution():
    # three answer tokens with probabilities 1/2, 1/4, 1/8: NLL = 6 log 2, mean 2 log 2
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.125, 0.875, 0.0]])
    # position t scores the label at t + 1; the last position scores nothing
    logits = torch.cat([probs.clamp(min=1e-30).log(), torch.zeros(1, 3)]).unsqueeze(0)
    labels = torch.tensor([[IGNORE_INDEX, 0, 0, 0]])
    logprob = sequence_logprob(logits, labels)
    assert logprob.item() == pytest.approx(-6 * LOG2, rel=1e-5)
    beta, mean_nll = 4.5, 2 * LOG2
    loss = simnpo_loss(-logprob, torch.tensor([3]), beta=beta, gamma=0.0)
    assert loss.item() == pytest.approx(2 / beta * math.log1p(math.exp(-beta * mean_nll)),
                                        rel=1e-5)
    with_margin = simnpo_loss(-logprob, torch.tensor([3]), beta=beta, gamma=1.0)
    expected = 2 / beta * math.log1p(math.exp(-beta * (mean_nll - 1.0)))
    assert with_margin.item() == pytest.approx(expected, rel=1e-5)


def test_kl_of_identical_distributions_is_zero_and_a_two_token_case():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5]] * 2)
    kl, mask = token_kl(logits, logits.clone(), labels)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)
    assert mask.sum() == 6

    ref = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # p_ref = (1/2, 1/2)
    cur = torch.tensor([[[math.log(0.9), math.log(0.1)], [0.0, 0.0]]])  # p_theta = (0.9, 0.1)
    kl, _ = token_kl(ref, cur, torch.tensor([[IGNORE_INDEX, 1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(p_ref || p_theta)
    assert kl.item() == pytest.approx(expected, rel=1e-5)
    reversed_direction = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert abs(kl.item() - reversed_direction) > 0.1
    # prompt positions are not scored
    kl, _ = token_kl(ref, cur, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX]]))
    assert kl.abs().sum() == 0


def test_undial_target_distribution_on_a_small_vocabulary():
    ref_logits = torch.zeros(1, 3)
    targets = undial_targets(ref_logits, torch.tensor([1]), strength=math.log(2))
    # logits (0, -log 2, 0) -> weights (1, 1/2, 1) -> (0.4, 0.2, 0.4)
    assert torch.allclose(targets, torch.tensor([[0.4, 0.2, 0.4]]), atol=1e-6)
    assert soft_cross_entropy(torch.zeros(1, 3), targets).item() == pytest.approx(math.log(3))
    # a strong penalty removes the true token, whatever the reference thought of it
    sharp = undial_targets(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]), strength=50.0)
    assert sharp[0, 0] < 1e-15 and torch.allclose(sharp[0, 1:], torch.tensor([0.5, 0.5]))


def test_rmu_control_vector_and_activation_loss():
    vec = control_vector(16, 6.5, seed=3)
    assert vec.norm().item() == pytest.approx(6.5, rel=1e-6)
    assert (vec >= 0).all()  # uniform [0, 1) draws, as in the reference
    assert torch.equal(vec, control_vector(16, 6.5, seed=3))
    assert not torch.equal(vec, control_vector(16, 6.5, seed=4))

    acts = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    per_token = activation_mse(acts, torch.zeros(2), mask)
    assert per_token.tolist() == [[2.5, 12.5, 0.0]]
    steered = activation_mse(acts, torch.tensor([1.0, 2.0]), mask)
    assert steered.tolist() == [[0.0, 4.0, 0.0]]


def test_offset_scores_add_the_scaled_difference():
    target, unlearned, frozen = torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    combined = offset_scores(target, unlearned, frozen, scale=0.5)
    assert torch.allclose(combined, target + 0.5 * (unlearned - frozen))
    same = offset_scores(target, frozen, frozen, scale=3.0)
    assert torch.allclose(same, target)


# ---- the losses as methods see them, on a tiny model -----------------------------------------
def _tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=32, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def _stream(rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    examples = [Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)
                for prompt, answer in rows]
    return collate(examples, pad_token_id=0)


FORGET = _stream([([1, 5, 6], [7, 8, 2]), ([1, 9], [10, 11, 12, 2])])
RETAIN = _stream([([1, 13, 14], [15, 2]), ([1, 16], [17, 18, 2])])
IDK = _stream([([1, 5, 6], [20, 21, 2]), ([1, 9], [20, 22, 2])])
BATCH = {"forget": FORGET, "retain": RETAIN, "idk": IDK}


def _per_unit(method, model) -> dict[str, float]:
    counts, terms = method.counts(BATCH), method.losses(model, BATCH)
    assert set(counts) == set(terms)
    return {name: float(terms[name].total.detach()) / counts[name] for name in terms}


def _mean_answer_nll(model, stream) -> float:
    logits = model(input_ids=stream["input_ids"], attention_mask=stream["attention_mask"],
                   position_ids=stream["position_ids"]).logits
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), stream["labels"][:, 1:],
                           ignore_index=IGNORE_INDEX).item()


def test_grad_ascent_is_minus_the_mean_answer_nll():
    model = _tiny_model()
    values = _per_unit(get_method("grad_ascent")(), model)
    assert values == {"forget": pytest.approx(-_mean_answer_nll(model, FORGET), rel=1e-5)}


def test_grad_diff_adds_the_retain_nll_with_its_weight():
    model = _tiny_model()
    method = get_method("grad_diff")(retain_weight=0.25)
    values = _per_unit(method, model)
    assert values["forget"] == pytest.approx(-_mean_answer_nll(model, FORGET), rel=1e-5)
    assert values["retain"] == pytest.approx(_mean_answer_nll(model, RETAIN), rel=1e-5)
    assert method.losses(model, BATCH)["retain"].weight == 0.25


def test_methods_with_a_reference_start_at_their_known_values():
    model = _tiny_model()
    for name in ("npo", "npo+kl", "dpo", "idk_dpo", "kl"):
        method = get_method(name)()
        method.reference = frozen_copy(model)
        values = _per_unit(method, model)
        if name in ("npo", "npo+kl", "dpo", "idk_dpo"):
            assert values["forget"] == pytest.approx(20 * LOG2, rel=1e-5), name
        if name in ("npo+kl", "kl"):
            assert values["retain"] == pytest.approx(0.0, abs=1e-6), name
        if name == "idk_dpo":
            assert values["retain"] == pytest.approx(_mean_answer_nll(model, RETAIN), rel=1e-5)


def test_undial_from_a_copy_of_itself():
    model = _tiny_model()
    method = get_method("undial")(strength=0.0)
    method.reference = frozen_copy(model)
    # with no adjustment the target is the model's own distribution: CE = its entropy
    logits = model(input_ids=FORGET["input_ids"], attention_mask=FORGET["attention_mask"],
                   position_ids=FORGET["position_ids"]).logits[:, :-1]
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)[FORGET["labels"][:, 1:] != IGNORE_INDEX].mean()
    assert _per_unit(method, model)["forget"] == pytest.approx(entropy.item(), rel=1e-5)


def test_simnpo_method_matches_the_pure_function():
    model = _tiny_model()
    method = get_method("simnpo")()
    logits = model(input_ids=FORGET["input_ids"], attention_mask=FORGET["attention_mask"],
                   position_ids=FORGET["position_ids"]).logits
    lengths = (FORGET["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
    expected = simnpo_loss(-sequence_logprob(logits, FORGET["labels"]), lengths, 4.5, 0.0)
    assert _per_unit(method, model)["forget"] == pytest.approx(expected.mean().item(), rel=1e-5)


# ---- hyperparameters ---------------------------------------------------------------------------
def test_hyperparameters_are_checked_and_coerced():
    npo = get_method("npo")(beta="0.5", lora="true", lora_r="4")
    assert npo.hyperparameters["beta"] == 0.5 and npo.hyperparameters["lora"] is True
    assert npo.hyperparameters["lora_r"] == 4
    with pytest.raises(ConfigError, match="unknown hyperparameter.*betta"):
        get_method("npo")(betta=0.5)
    with pytest.raises(ConfigError, match="'beta'.*must be a number"):
        get_method("npo")(beta="large")
    with pytest.raises(ConfigError, match="'beta'.*positive"):
        get_method("dpo")(beta=0)
    with pytest.raises(ConfigError, match="'lora_r'.*integer"):
        get_method("grad_diff")(lora_r=2.5)
    with pytest.raises(ConfigError, match="small_model"):
        get_method("offset")()
    with pytest.raises(ConfigError, match="cannot train with 'rmu'"):
        get_method("offset")(small_model="somewhere", loss="rmu")


def test_every_method_names_its_paper_and_summary():
    for name in ("grad_ascent", "grad_diff", "kl", "npo", "npo+grad_diff", "npo+kl", "simnpo",
                 "dpo", "idk_dpo", "idk", "rmu", "undial", "offset"):
        cls = get_method(name)
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary
        assert "arXiv" in cls.paper and "20" in cls.paper


# ---- aligned streams (DPO pairs) -------------------------------------------------------------------
def test_an_aligned_stream_follows_the_primary_row_for_row():
    forget = [Encoded([1, 100 + i], [IGNORE_INDEX, 100 + i]) for i in range(7)]
    idk = [Encoded([1, 200 + i], [IGNORE_INDEX, 200 + i]) for i in range(7)]
    retain = [Encoded([1, 300 + i], [IGNORE_INDEX, 300 + i]) for i in range(5)]
    data = StreamData({"forget": forget, "idk": idk, "retain": retain}, primary="forget",
                      aligned=("idk",))
    trainer = Trainer(_tiny_model(), get_method("grad_ascent")(), data,
                      TrainConfig(batch_size=3, epochs=3, show_progress=False), pad_token_id=0)
    unpaired = 0
    for step in range(trainer.total_steps):
        batch = trainer._micro_batch(step, 0)
        assert torch.equal(batch["idk"]["input_ids"][:, 1] - 100,
                           batch["forget"]["input_ids"][:, 1])
        unpaired += int((batch["retain"]["input_ids"][:, 1] - 200
                         != batch["forget"]["input_ids"][:, 1]).any())
    assert unpaired > 0
    with pytest.raises(ConfigError, match="aligned"):
        StreamData({"forget": forget, "idk": idk[:3]}, primary="forget", aligned=("idk",))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi"])
def test_rmu_finds_the_layers_and_mlp_outputs_of_other_families(family):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        PhiConfig,
        PhiForCausalLM,
    )

    from uldkit.methods.activations import decoder_layers, train_only_mlp_outputs

    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                 intermediate_size=32)
    model = {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=3,
                                                   n_head=2)),
        "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**small)),
        "phi": lambda: PhiForCausalLM(PhiConfig(**small)),
    }[family]()
    layers = decoder_layers(model)
    assert len(layers) == 3
    train_only_mlp_outputs(model, layers[1:3])  # rmu's layer=2, trained_layers=2
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 and all(".1." in n or ".2." in n for n in trained)
