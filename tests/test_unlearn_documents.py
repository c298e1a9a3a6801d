"""Document forget sets (MUSE-style): unlearning passages instead of QA pairs."""

from __future__ import annotations

import json

import pytest
import torch

from uldkit.data.documents import biographies_of, encode_document_chunks
from uldkit.data.formatting import IGNORE_INDEX
from uldkit.data.synthetic import generate_world
from uldkit.errors import ConfigError
from uldkit.models.loading import load_model
from uldkit.uld.records import read_history
from uldkit.unlearning.catalog import get_method
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import UnlearnConfig, load_unlearn_data, unlearn

FORGET_DOCS, RETAIN_DOCS = "synthetic:forget10", "synthetic:retain90"


def _config(world, out, method, **extra) -> UnlearnConfig:
    return UnlearnConfig(method=method, model=str(world.target), out=str(out),
                         people=world.people, forget_documents=FORGET_DOCS,
                         retain_documents=RETAIN_DOCS, **extra)


def test_weight_editing_methods_train_on_the_passages(trained_world, tmp_path):
    method_cls = get_method("grad_diff")
    data = load_unlearn_data(_config(trained_world, tmp_path, "grad_diff"), method_cls)
    assert len(data.retain) == 0  # the retain side is the retain passages only
    target, tokenizer = load_model(trained_world.target)
    plan = method_cls().plan(target, tokenizer, data)
    world = generate_world(trained_world.people, 0)
    forget = plan.data.streams["forget"]
    assert forget == encode_document_chunks(tokenizer, biographies_of(world, "forget10"),
                                            data.max_length)
    assert len(forget) == 2 and all(e.labels[0] == IGNORE_INDEX for e in forget)
    assert all(label != IGNORE_INDEX for e in forget for label in e.labels[1:])
    assert len(plan.data.streams["retain"]) == len(biographies_of(world, "retain90"))

    # an explicit retain QA split is added to the retain passages
    with_qa = load_unlearn_data(_config(trained_world, tmp_path, "grad_diff",
                                        retain="retain_perturbed"), method_cls)
    plan = method_cls().plan(target, tokenizer, with_qa)
    assert len(plan.data.streams["retain"]) == 40 + len(biographies_of(world, "retain90"))


def test_uld_records_passages_and_continues_from_them(trained_world, tmp_path):
    train = {"epochs": 1, "batch_size": 2, "lr": 1e-2, "show_progress": False}
    first = tmp_path / "first"
    unlearn(_config(trained_world, first, "uld", train_overrides=train), show_progress=False)
    manifest = json.loads((first / "uldkit_model.json").read_text())
    request = manifest["forget_requests"][0]
    assert request["passages"] == 2 and request["forget_pairs"] == 0
    assert manifest["training"]["forget_passages"] == 2
    history = read_history(first)
    assert [len(r.passages) for r in history] == [2]
    assert history[0].passages[0].startswith(
        generate_world(trained_world.people, 0).forget_people("forget10")[0].name)
    lm = load_language_model(first)
    ids = torch.tensor([lm.tokenizer("x y")["input_ids"]])
    scores = lm.logits(ids, torch.ones_like(ids))
    assert scores.shape[:2] == ids.shape and torch.isfinite(scores).all()

    # a QA request continues the passage assistant: both are in the history
    second = tmp_path / "second"
    unlearn(UnlearnConfig(method="uld", model=str(trained_world.target), out=str(second),
                          people=trained_world.people, forget="forget01",
                          hyperparameters={"assistant": str(first)}, train_overrides=train),
            show_progress=False)
    continued = read_history(second)
    assert [len(r.passages) for r in continued] == [2, 0]
    assert len(continued[1].forget) == 10


@pytest.mark.parametrize(("method", "extra", "message"), [
    ("dpo", {}, "cannot unlearn passages"),
    ("idk", {}, "cannot unlearn passages"),
    ("grad_diff", {"forget_documents": None}, "retain_documents needs forget_documents"),
    ("grad_diff", {"forget_documents": "synthetic:nobody"}, "unknown synthetic documents"),
])
def test_document_config_errors(trained_world, tmp_path, method, extra, message):
    config = _config(trained_world, tmp_path / "out", method)
    for key, value in extra.items():
        setattr(config, key, value)
    with pytest.raises(ConfigError, match=message):
        unlearn(config, show_progress=False)
    assert not (tmp_path / "out").exists()
