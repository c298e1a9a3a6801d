"""ULD: zero-copy assistant, combined scores, training, saving, further requests, CLI."""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from random_assistant import random_assistant
from transformers import LlamaForSequenceClassification

from uldkit.cli import main
from uldkit.cli.unlearn_cmd import parse_params
from uldkit.data.collate import position_ids_from_mask
from uldkit.data.formatting import encode_prompt
from uldkit.data.types import QADataset
from uldkit.errors import ConfigError, ModelError
from uldkit.methods.base import UnlearnContext, UnlearnData
from uldkit.models.fingerprint import weight_fingerprint
from uldkit.models.lm import CausalLM
from uldkit.models.loading import load_model
from uldkit.models.scoring import mean_answer_probability
from uldkit.training.run_dir import MANIFEST_NAME
from uldkit.training.trainer import Trainer
from uldkit.uld.assistant import ZeroCopyAssistant
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import EXCLUDED_LOGPROB, LogitDifferenceModel
from uldkit.uld.method import ULD, uniform_kl
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import resolve_train_config

# The tiny 4-layer target memorises its answers and has a 768-token vocabulary: two assistant
# layers and a lighter uniform weight than the paper's 5 (made for a 32k vocabulary) give the
# assistant a sharper signal; the retain side defaults to all 180 retain90 pairs.
SETTINGS = {"assistant_layers": 2, "uniform_weight": 1.0, "alpha": 1.0}
TRAINING = {"epochs": 20, "lr": 1e-2, "show_progress": False}
TRAIN_ARGS = ["--epochs", "20", "--lr", "1e-2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _left_padded(tokenizer, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def _random_assistant(path: Path, layers: int = 2) -> tuple[ZeroCopyAssistant, object]:
    """An assistant whose adapters are not zero, so it differs from the target."""
    model, tokenizer = load_model(path)
    return random_assistant(model, layers), tokenizer


def _prompts(trained_world, tokenizer, count: int = 3) -> list[list[int]]:
    questions = [p.question for p in trained_world.source.load("forget10")][:count]
    lengths = [0, 3, 6]
    return [encode_prompt(tokenizer, q)[: len(encode_prompt(tokenizer, q)) - cut]
            for q, cut in zip(questions, lengths)]


def _expected_scores(target_logits, assistant_logits, alpha, tau):
    logprobs = torch.log_softmax(target_logits, -1)
    scores = logprobs - alpha * assistant_logits
    if tau > 0:
        top = logprobs.max(-1, keepdim=True).values
        excluded = logprobs < top + math.log(tau)
        scores[excluded] = float("-inf")
        scores = torch.log_softmax(scores, -1)
        scores[excluded] = EXCLUDED_LOGPROB
    return scores


def _assert_scores_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(got == EXCLUDED_LOGPROB, expected == EXCLUDED_LOGPROB)
    assert (got - expected).abs().max() < 1e-5


# ---- scores ---------------------------------------------------------------------------------
def test_combined_scores_equal_two_separate_forward_passes(trained_world):
    assistant, tokenizer = _random_assistant(trained_world.target)
    ids, mask = _left_padded(tokenizer, _prompts(trained_world, tokenizer))
    positions = position_ids_from_mask(mask)
    reference_target, _ = load_model(trained_world.target)
    # The reference assistant: a deep copy whose layer list is cut to K, run by HF's own code.
    reference = copy.deepcopy(assistant.peft_model).base_model.model
    reference.model.layers = reference.model.layers[:2]
    reference.config.num_hidden_layers = 2
    with torch.no_grad():
        target_logits = reference_target(input_ids=ids, attention_mask=mask,
                                         position_ids=positions).logits
        assistant_logits = reference(input_ids=ids, attention_mask=mask,
                                     position_ids=positions).logits
        assert (assistant_logits - target_logits).abs().max() > 0.1  # adapters make a difference
        real = mask.bool()
        for alpha, tau in [(0.8, 0.0), (0.8, 0.1), (1.0, 1e-3)]:
            lm = LogitDifferenceModel(assistant, tokenizer, alpha=alpha, tau=tau)
            got = lm.logits(ids, mask)
            expected = _expected_scores(target_logits, assistant_logits, alpha, tau)
            _assert_scores_equal(got[real], expected[real])
            assert torch.isfinite(got[real]).any(-1).all()
            if tau > 0:
                assert (got[real] == EXCLUDED_LOGPROB).any()


def test_cached_decoding_equals_full_forward(trained_world):
    assistant, tokenizer = _random_assistant(trained_world.target)
    lm = LogitDifferenceModel(assistant, tokenizer, alpha=0.8, tau=0.01)
    ids, mask = _left_padded(tokenizer, _prompts(trained_world, tokenizer))
    continuation = torch.randint(3, len(tokenizer), (ids.shape[0], 5),
                                 generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = lm.logits(torch.cat([ids, continuation], 1),
                         torch.cat([mask, torch.ones_like(continuation)], 1))
        decoding = lm.start_decoding(ids, mask)
        for step in range(continuation.shape[1] + 1):
            _assert_scores_equal(decoding.scores, full[:, ids.shape[1] - 1 + step])
            if step < continuation.shape[1]:
                decoding.advance(continuation[:, step])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_paired_pass_equals_the_two_passes(trained_world, attention):
    assistant, tokenizer = _random_assistant(trained_world.target)
    assistant.target.set_attn_implementation(attention)
    assert assistant.supports_paired_forward
    paired = LogitDifferenceModel(assistant, tokenizer, alpha=0.8, tau=0.0)
    separate = LogitCombination(paired.members, paired.combine, tokenizer, paired.device)
    ids, mask = _left_padded(tokenizer, _prompts(trained_world, tokenizer))
    real = mask.bool()
    continuation = torch.randint(3, len(tokenizer), (ids.shape[0], 4),
                                 generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target_logits, assistant_logits = assistant.paired_forward(ids, mask)
        # Target rows get no adapter contribution: the target alone, and the assistant alone.
        with assistant.adapters_disabled():
            alone = assistant.target(input_ids=ids, attention_mask=mask,
                                     position_ids=position_ids_from_mask(mask)).logits
        assert (target_logits - alone)[real].abs().max() < 1e-5
        assert (assistant_logits - assistant(ids, mask).logits)[real].abs().max() < 1e-5
        _assert_scores_equal(paired.logits(ids, mask)[real], separate.logits(ids, mask)[real])
        one_cache, two_caches = paired.start_decoding(ids, mask), separate.start_decoding(ids, mask)
        for step in range(continuation.shape[1]):
            _assert_scores_equal(one_cache.scores, two_caches.scores)
            one_cache.advance(continuation[:, step])
            two_caches.advance(continuation[:, step])
    assert assistant._row_gate.value is None  # the gate is only set inside the paired pass


def test_assistant_shares_the_target_weights_and_trains_only_lora(trained_world):
    model, _ = load_model(trained_world.target)
    storage = {p.data_ptr() for p in model.parameters()}
    count = sum(1 for _ in model.parameters())
    fingerprint = weight_fingerprint(model)
    assistant = ZeroCopyAssistant(model, 2)
    lora = {n: p for n, p in assistant.named_parameters() if "lora_" in n}
    shared = [p for n, p in assistant.named_parameters() if "lora_" not in n]
    assert len(shared) == count and {p.data_ptr() for p in shared} == storage
    assert all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for p in shared)
    # LoRA on the 7 linear layers of layers 0 and 1 only: A is r x in, B is out x r.
    config = model.config
    h, m, r = config.hidden_size, config.intermediate_size, 16
    per_layer = 4 * r * (h + h) + 2 * r * (h + m) + r * (m + h)
    assert sum(p.numel() for p in lora.values()) == 2 * per_layer
    assert not any(".layers.2." in n or ".layers.3." in n for n in lora)
    assert weight_fingerprint(assistant.target) == fingerprint
    assert sum(1 for _ in assistant.target_pass().parameters()) == count + len(lora)


def test_assistant_refuses_what_it_cannot_serve(trained_world):
    model, _ = load_model(trained_world.target)
    for layers in (5, 0):
        with pytest.raises(ConfigError, match="between 1 and 4"):
            ZeroCopyAssistant(model, layers)
    classifier = LlamaForSequenceClassification(model.config)
    with pytest.raises(ModelError, match="LlamaForSequenceClassification .model type 'llama'. "
                                         "is not one"):
        ZeroCopyAssistant(classifier)
    ZeroCopyAssistant(model)
    with pytest.raises(ModelError, match="already carries adapters"):
        ZeroCopyAssistant(model)


def test_uniform_kl_is_kl_from_uniform():
    logits = torch.randn(2, 4, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 1, 2]])
    got = uniform_kl(logits, labels)
    uniform = torch.full((2, 3, 11), 1 / 11)
    reference = F.kl_div(torch.log_softmax(logits[:, :-1], -1), uniform,
                         reduction="none").sum(-1)
    mask = labels[:, 1:] != -100
    assert torch.allclose(got[mask], reference[mask], atol=1e-6)
    assert (got[~mask] == 0).all() and (got[mask] > 0).all()
    assert uniform_kl(torch.zeros(1, 3, 11), torch.tensor([[0, 1, 2]])).abs().max() < 1e-6


def test_settings_are_checked():
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) layers of method 'uld'"):
        ULD(layers=2)
    with pytest.raises(ConfigError, match="'tau'.*in \\[0, 1\\]"):
        ULD(tau=2)
    with pytest.raises(ConfigError, match="'assistant_layers'.*an integer"):
        ULD(assistant_layers=1.5)
    assert ULD(assistant_layers="3", alpha=1).params.assistant_layers == 3
    assert parse_params(["a=1", "b=0.5", "c=text", "d=[1, 2]", "e=x=y"]) == {
        "a": 1, "b": 0.5, "c": "text", "d": [1, 2], "e": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_params(["novalue"])


# ---- training, saving, loading ------------------------------------------------------------
@dataclass
class FirstRequest:
    out: Path
    lm: LogitDifferenceModel
    target_unchanged: bool
    lora_changed: bool


def _person(source, split: str, index: int) -> QADataset:
    pairs = [p for p in source.load(split) if p.subject == source.load(split)[index].subject]
    return QADataset(pairs, "person-a")


@pytest.fixture(scope="module")
def first_request(trained_world, tmp_path_factory) -> FirstRequest:
    """ULD on one person of forget10 (not forget01's), trained in-process."""
    source = trained_world.source
    model, tokenizer = load_model(trained_world.target)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    method = ULD(**SETTINGS)
    data = UnlearnData(forget=_person(source, "forget10", 0), retain=source.load("retain90"),
                       augmentation=source.augmentation("forget10"), max_length=128)
    plan = method.plan(model, tokenizer, data)
    lora_before = {n: p.detach().clone() for n, p in plan.model.named_parameters()
                   if p.requires_grad}
    Trainer(plan.model, plan.objective, plan.data, resolve_train_config(ULD, TRAINING),
            pad_token_id=tokenizer.pad_token_id).train()
    after = {n.replace(".base_layer.", "."): t for n, t in plan.model.target.state_dict().items()
             if "lora_" not in n}
    unchanged = set(after) == set(before) and all(torch.equal(before[n], after[n]) for n in before)
    changed = all(not torch.equal(p, lora_before[n]) for n, p in plan.model.named_parameters()
                  if n in lora_before and "lora_B" in n)
    out = tmp_path_factory.mktemp("uld") / "person-a"
    method.save(plan, tokenizer, out, UnlearnContext(str(trained_world.target)))
    lm = LogitDifferenceModel(plan.model, tokenizer, alpha=1.0)
    return FirstRequest(out, lm, unchanged, changed)


@pytest.fixture(scope="module")
def continued(trained_world, first_request, tmp_path_factory) -> Path:
    """A second request (forget01: the other forget10 person) through `uldkit unlearn`."""
    out = tmp_path_factory.mktemp("uld") / "both"
    main(["unlearn", "--method", "uld", "--model", str(trained_world.target), "--people", "20",
          "--forget", "forget01", "--assistant", str(first_request.out), "--out", str(out),
          *TRAIN_ARGS])
    return out


def _probability(lm, pairs) -> float:
    return mean_answer_probability(lm, [p.question for p in pairs], [p.answer for p in pairs])


def test_training_changes_only_the_adapters(first_request):
    assert first_request.target_unchanged
    assert first_request.lora_changed
    files = sorted(p.name for p in first_request.out.iterdir())
    assert files == ["adapter.safetensors", "forget_history.jsonl", MANIFEST_NAME]


def test_save_load_round_trip_gives_the_same_scores(trained_world, first_request):
    loaded = load_language_model(first_request.out)
    assert isinstance(loaded, LogitDifferenceModel)
    assert (loaded.alpha, loaded.tau) == (1.0, 1e-4)
    prompts = _prompts(trained_world, loaded.tokenizer)
    ids, mask = _left_padded(loaded.tokenizer, prompts)
    with torch.no_grad():
        _assert_scores_equal(loaded.logits(ids, mask), first_request.lm.logits(ids, mask))
    view = load_language_model(first_request.out, alpha=0.5, tau=0.1)
    assert (view.alpha, view.tau) == (0.5, 0.1)


def test_loading_refuses_a_target_that_does_not_match(trained_world, first_request, tmp_path):
    with pytest.raises(ModelError, match="weights differ"):
        load_language_model(first_request.out, target=str(trained_world.retain))
    manifest = json.loads((first_request.out / MANIFEST_NAME).read_text())
    for field, value, message in [("assistant_layers", 9, "only 4"),
                                  ("vocab_size", 999, "vocabulary size 999"),
                                  ("architecture", {"model_type": "mistral",
                                                    "config_class": "MistralConfig"},
                                   "architecture mistral")]:
        broken = tmp_path / field
        shutil.copytree(first_request.out, broken)
        (broken / MANIFEST_NAME).write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(ModelError, match=message):
            load_language_model(broken)
    with pytest.raises(ModelError, match="unknown ULD setting"):
        load_language_model(first_request.out, beta=1)


def test_uld_forgets_and_keeps_the_rest(trained_world, first_request, continued):
    source = trained_world.source
    target = load_language_model(trained_world.target)
    uld = load_language_model(continued)
    assert isinstance(target, CausalLM) and isinstance(uld, LogitDifferenceModel)
    forget, retain = source.load("forget10"), source.load("retain_perturbed")
    general = source.load("world_facts_perturbed")

    def kept(lm, pairs) -> float:  # the share of the target's answer probability left
        return _probability(lm, pairs) / _probability(target, pairs)

    # Bars from the spread over four seeds of the fixtures' training (the target and retain
    # models and both ULD requests; scripts/measure_test_margins.py --seeds 0 1 2 3 prints
    # them as kept_uld_forget etc.): each is the mean -/+ 4 sample sd of the measured values,
    # rounded outward, so numerics that move a figure as another seed would still pass.
    assert kept(uld, forget) < 0.25  # 0.194 0.182 0.197 0.201: mean + 4 sd 0.226
    assert kept(uld, retain) > 0.95  # 0.984 0.993 0.988 0.993: mean - 4 sd 0.972
    # Nothing in ULD's training holds the general facts (the retain side is retain90 only):
    # what is kept of them varies from seed to seed (0.875 0.592 0.854 0.874), so the claim
    # is that they lose far less than the forget set does (4.5 3.2 4.3 4.3 times as much
    # kept: mean - 4 sd 1.78).
    assert kept(uld, general) > 1.5 * kept(uld, forget)
    # The earlier request stays forgotten; the first assistant alone had not touched forget01.
    person_a, person_b = _person(source, "forget10", 0), source.load("forget01")
    assert kept(uld, person_a) < 0.25  # 0.191 0.180 0.194 0.174
    assert kept(first_request.lm, person_a) < 0.25  # 0.180 0.162 0.152 0.168
    assert kept(first_request.lm, person_b) > 0.9  # 0.946 0.977 0.966 0.972: mean - 4 sd 0.911


def test_further_request_records_every_request(first_request, continued):
    manifest = json.loads((continued / MANIFEST_NAME).read_text())
    assert [r["forget_split"] for r in manifest["forget_requests"]] == ["person-a", "forget01"]
    assert manifest["training"]["continued_from"] == str(first_request.out.resolve())
    assert manifest["training"]["forget_side"] == 60  # 2 people x 10 facts x 3 phrasings
    lines = (continued / "forget_history.jsonl").read_text().splitlines()
    roles = [(json.loads(line)["request"], json.loads(line)["role"]) for line in lines]
    assert roles.count((1, "forget")) == 10 and roles.count((2, "forget")) == 10
    with pytest.raises(SystemExit):
        main(["unlearn", "--method", "uld", "--model", "unused", "--assistant",
              str(continued), "--out", str(continued)])


# ---- command line ---------------------------------------------------------------------------
def test_generate_on_plain_and_uld_directories(trained_world, first_request, capsys):
    question = _person(trained_world.source, "forget10", 0)[0]
    main(["generate", "--model", str(trained_world.target), "--prompt", question.question,
          "--max-new-tokens", "24"])
    plain = capsys.readouterr().out.strip()
    assert plain == question.answer
    main(["generate", "--model", str(first_request.out), "--prompt", question.question,
          "--max-new-tokens", "24", "--alpha", "0"])
    assert capsys.readouterr().out.strip() == plain
    main(["generate", "--model", str(first_request.out), "--prompt", question.question,
          "--max-new-tokens", "24"])
    assert capsys.readouterr().out.strip() != plain
    main(["generate", "--model", str(trained_world.target), "--prompt", "Question:", "--raw",
          "--prompt", "Question: Who", "--max-new-tokens", "4", "--temperature", "0.7",
          "--seed", "0"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_unlearn_command_errors_are_one_line(trained_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["unlearn", "--method", "nope", "--model", str(trained_world.target),
              "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown method 'nope'" in error and "uld" in error
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(trained_world.target), "--prompt", "q", "--tau", "0.1"])
    assert "plain model" in capsys.readouterr().err
