"""Methods receive ready data: what the user holds (split names, paths, datasets, lists of
dicts, passages) becomes an UnlearnData before a method sees it, and the run step trains a
method instance on it from a target in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uldkit.data.records import record_from_qa
from uldkit.data.sources import DataSource
from uldkit.data.types import Augmentation, DocumentDataset, QADataset
from uldkit.errors import ConfigError, DataError
from uldkit.models.loading import load_model
from uldkit.models.scoring import mean_answer_probability
from uldkit.unlearning.catalog import get_method
from uldkit.unlearning.data import DataSpec, resolve_unlearn_data
from uldkit.unlearning.load import load_language_model
from uldkit.unlearning.run import resolve_train_config, run_unlearning

SOURCE = DataSource("synthetic")  # DataSpec's default world


def _records(split: str) -> list[dict]:
    return [record_from_qa(p) for p in SOURCE.load(split)]


def test_in_memory_sets_become_typed_sets():
    forget = _records("forget10")
    retain = SOURCE.load("retain90")
    data = resolve_unlearn_data(
        DataSpec(forget=forget, retain=retain, refusals=["No idea."], max_length=64),
        get_method("dpo"))
    assert isinstance(data.forget, QADataset) and data.forget.name == "forget"
    assert [p.question for p in data.forget] == [r["question"] for r in forget]
    assert data.retain is retain and data.refusals == ["No idea."] and data.max_length == 64
    alone = resolve_unlearn_data(DataSpec(forget=forget), get_method("grad_ascent"))
    assert len(alone.retain) == 0 and alone.refusals == [] and alone.augmentation is None


def test_files_and_datasets_give_the_same_pairs(tmp_path):
    datasets = pytest.importorskip("datasets")
    forget = _records("forget10")
    file = tmp_path / "forget.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in forget))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(forget).save_to_disk(str(saved))
    named = resolve_unlearn_data(DataSpec(forget="forget10"), get_method("grad_diff"))
    for spec in (file, saved, datasets.Dataset.from_list(forget)):
        data = resolve_unlearn_data(DataSpec(forget=spec, retain="retain90"),
                                    get_method("grad_diff"))
        assert data.forget.pairs == named.forget.pairs
        assert data.retain.pairs == named.retain.pairs


def test_passages_in_memory_and_what_a_method_needs():
    texts = ["Ada Lovelace wrote the first program.", "The Analytical Engine was never built."]
    data = resolve_unlearn_data(DataSpec(forget_documents=texts, retain_documents=texts[:1]),
                                get_method("npo"))
    assert isinstance(data.forget_documents, DocumentDataset)
    assert [d.text for d in data.forget_documents] == texts
    assert len(data.retain) == 0  # passages: no retain QA unless named
    with pytest.raises(DataError, match="forget_documents item 2: a passage must be"):
        resolve_unlearn_data(DataSpec(forget_documents=["fine", " "]), get_method("npo"))
    with pytest.raises(ConfigError, match="'idk' cannot unlearn passages"):
        resolve_unlearn_data(DataSpec(forget_documents=texts), get_method("idk"))
    forget = _records("forget10")
    with pytest.raises(ConfigError, match="method 'uld' needs the forget set's augmentation"):
        resolve_unlearn_data(DataSpec(forget=forget), get_method("uld"))
    given = Augmentation()
    assert resolve_unlearn_data(DataSpec(forget=forget, augmentation=given),
                                get_method("uld")).augmentation is given
    assert resolve_unlearn_data(DataSpec(), get_method("uld")).augmentation.paraphrases
    with pytest.raises(ConfigError, match="the forget set must be a split name, a path"):
        resolve_unlearn_data(DataSpec(forget=42), get_method("npo"))


def test_the_run_step_trains_a_method_on_ready_data_from_a_model_in_memory(trained_world,
                                                                           tmp_path):
    target, tokenizer = load_model(trained_world.target)
    forget = trained_world.source.load("forget10")
    data = resolve_unlearn_data(DataSpec(forget=[record_from_qa(p) for p in forget]),
                                get_method("grad_ascent"))
    method = get_method("grad_ascent")(forget_weight=1.0)
    train = resolve_train_config(type(method), {"lr": 1e-3, "epochs": 3, "batch_size": 4,
                                                "grad_accum": 1,
                                                "warmup_ratio": 0.0, "show_progress": False})
    out = tmp_path / "ga"
    result = run_unlearning(method, data, target, tokenizer, out,
                            target_path=str(trained_world.target), train=train)
    assert result.steps == 15 and result.out == out
    lm = load_language_model(out)
    before = load_language_model(trained_world.target)
    questions, answers = [p.question for p in forget], [p.answer for p in forget]
    assert (mean_answer_probability(lm, questions, answers)
            < 0.5 * mean_answer_probability(before, questions, answers))
    record = json.loads((out / "run_config.json").read_text())["config"]
    assert record["model"] == str(trained_world.target)
    assert record["method"]["hyperparameters"]["forget_weight"] == 1.0
    assert record["forget_examples"] == len(forget) and record["retain_examples"] == 0
    summary = json.loads((Path(out) / "unlearn_summary.json").read_text())
    assert summary["forget_split"] == "forget" and summary["steps"] == 15
