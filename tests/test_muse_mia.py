"""MUSE and membership inference on real tiny models trained on synthetic biographies.

World: 100 people (forget10 = the last 10) and 40 held-out people who are in the tokenizer's
corpus but in no training set. The target learns every biography (forget and retain), the
forget QA and a 40-pair sample of retain QA; the retain model learns only the retain
biographies and the same retain QA. Both also learn the world's general facts.

Why the thresholds: a model that saw a passage gives it a much lower loss than an unseen one,
so the target's AUC of forget vs holdout is 1.0 for every attack (measured: 1.0 at 10 and at
15 epochs, data seeds 0 and 1); we ask for >= 0.9. For the retain model forget and holdout
passages are both unseen, so its AUC is a draw from the null distribution of the
Mann-Whitney AUC, whose standard deviation for 10 vs 40 samples is
sqrt((10 + 40 + 1) / (12 * 10 * 40)) = 0.10; we allow 0.5 +- 0.25 (2.5 standard deviations).
Measured: 0.57-0.65 with data seed 0 (this test's seed), 0.43-0.47 with seed 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from uldkit.cli import main
from uldkit.data.documents import DocumentSplits, synthetic_document_splits
from uldkit.data.synthetic import generate_world
from uldkit.eval.mia import mia_audit
from uldkit.eval.muse import MUSE_COLUMNS, MuseSettings, evaluate_muse
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig
from uldkit.unlearning.load import load_language_model

PEOPLE, HOLDOUT = 100, 40
# uldkit's KnowMem: these models learned uldkit's QA format, where MUSE's "Answer: " prompt
# leaves a lone space token before the answer (tests/test_knowmem.py checks MUSE's variant).
SETTINGS = MuseSettings(batch_size=32, answer_tokens=32, knowmem="uldkit")


@dataclass(frozen=True)
class DocumentWorld:
    target: Path
    retain: Path
    data: DocumentSplits


def _finetune(out: Path, splits: list[str], documents: str) -> Path:
    finetune(FinetuneConfig(
        out=str(out), splits=splits, documents=documents, people=PEOPLE,
        holdout_people=HOLDOUT, size="tiny", vocab_size=768, max_length=128,
        train=TrainConfig(epochs=12, batch_size=32, lr=5e-3, warmup_ratio=0.05,
                          show_progress=False),
    ))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DocumentWorld:
    root = tmp_path_factory.mktemp("document_world")
    return DocumentWorld(
        target=_finetune(root / "target", ["forget10", "retain_perturbed"], "synthetic:full"),
        retain=_finetune(root / "retain", ["retain_perturbed"], "synthetic:retain90"),
        data=synthetic_document_splits(generate_world(PEOPLE, 0, HOLDOUT), "forget10"),
    )


def _texts(documents) -> list[str]:
    return [d.text for d in documents]


def test_finetune_trains_on_the_biographies(world):
    record = json.loads((world.target / "run_config.json").read_text())
    # 100 forget QA + 40 retain QA + 60 general facts + one window per biography
    assert record["config"]["documents"] == "synthetic:full"
    assert record["config"]["examples"] == 100 + 40 + 60 + PEOPLE
    retain_record = json.loads((world.retain / "run_config.json").read_text())
    assert retain_record["config"]["examples"] == 40 + 60 + 90


def test_mia_separates_members_only_for_the_model_that_saw_them(world):
    target = load_language_model(world.target)
    retain = load_language_model(world.retain)
    forget, holdout = _texts(world.data.forget), _texts(world.data.holdout)
    assert (len(forget), len(holdout)) == (10, HOLDOUT)
    report = mia_audit(target, forget, holdout, retain_lm=retain, k=0.4)
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        result = report.result(attack)
        assert result.auc >= 0.9, result
        assert abs(result.retain_auc - 0.5) <= 0.25, result
        assert result.separates and result.verdict.startswith("still separates")
    assert "loss" in report.conclusion() and "min_k" in report.conclusion()
    # the retain model is not blind: its own training passages stand out from the holdout
    own = mia_audit(retain, _texts(world.data.retain), holdout, k=0.4)
    assert own.result("loss").auc >= 0.9 and own.result("min_k").auc >= 0.9


def test_muse_of_target_and_of_the_retain_model(world):
    target = load_language_model(world.target)
    retain = load_language_model(world.retain)
    retain_again = load_language_model(world.retain)  # a separate copy: nothing is reused
    of_target = evaluate_muse(target, world.data, retain, target, SETTINGS).summary
    of_retain = evaluate_muse(retain_again, world.data, retain, target, SETTINGS).summary
    assert of_retain.privleak == 0.0  # the retain model against itself
    assert of_target.privleak > 0.3  # AUC ~1.0 against the retain model's ~0.6: under-unlearned
    assert of_target.verbmem_forget > of_retain.verbmem_forget + 0.2
    assert of_target.knowmem_forget > of_retain.knowmem_forget + 0.3
    assert of_target.utility_preserved == 1.0
    assert 0 < of_retain.knowmem_retain and of_retain.utility_preserved == pytest.approx(
        of_retain.knowmem_retain / of_target.knowmem_retain)
    assert list(of_target.to_dict())[:5] == list(MUSE_COLUMNS)


def test_cli_muse_and_mia_end_to_end(world, tmp_path, capsys):
    muse_out, mia_out = tmp_path / "muse", tmp_path / "mia"
    common = ["--people", str(PEOPLE), "--batch-size", "32"]  # --holdout: from run_config
    main(["eval", "muse", "--model", str(world.target), "--retain-model", str(world.retain),
          "--target", str(world.target), "--out", str(muse_out), "--answer-tokens", "32",
          *common])
    printed = capsys.readouterr().out
    assert "VerbMem on D_f" in printed and "PrivLeak" in printed
    summary = json.loads((muse_out / "muse_summary.json").read_text())
    assert list(summary)[3:8] == list(MUSE_COLUMNS)
    assert summary["counts"] == {"forget_passages": 10, "holdout_passages": HOLDOUT,
                                 "forget_qa": 100, "retain_qa": 40}
    samples = [json.loads(line)
               for line in (muse_out / "muse_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 10 + 100 + 40 + 10 + HOLDOUT
    assert {s["metric"] for s in samples} == {"verbmem", "knowmem_forget", "knowmem_retain",
                                              "privleak"}

    main(["eval", "mia", "--model", str(world.target), "--retain-model", str(world.retain),
          "--reference", str(world.retain), "--out", str(mia_out), *common])
    printed = capsys.readouterr().out
    assert "Still separating forget from holdout:" in printed and "reference" in printed
    report = json.loads((mia_out / "mia_summary.json").read_text())
    aucs = {a["attack"]: a for a in report["attacks"]}
    assert set(aucs) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}
    assert aucs["reference"]["auc"] >= 0.9 and aucs["reference"]["retain_auc"] == 0.5
    assert len((mia_out / "mia_samples.jsonl").read_text().splitlines()) == 10 + HOLDOUT

    # the same passages from files give the same AUCs
    for name, documents in (("forget", world.data.forget), ("holdout", world.data.holdout)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": d.text}) + "\n" for d in documents))
    main(["eval", "mia", "--model", str(world.target), "--retain-model", str(world.retain),
          "--forget-docs", str(tmp_path / "forget.jsonl"),
          "--holdout-docs", str(tmp_path / "holdout.jsonl"), "--out", str(tmp_path / "files"),
          "--batch-size", "32"])
    from_files = json.loads((tmp_path / "files" / "mia_summary.json").read_text())
    assert {a["attack"]: a["auc"] for a in from_files["attacks"]} == {
        name: a["auc"] for name, a in aucs.items() if name != "reference"}


def test_cli_errors_are_one_line(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "mia", "--model", str(world.target), "--data", str(tmp_path),
              "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "--forget-docs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["eval", "muse", "--model", str(world.target), "--retain-model", str(world.retain),
              "--forget-docs", str(tmp_path), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "give all of" in capsys.readouterr().err


class _Interrupted(Exception):
    pass


def _interrupt_call(monkeypatch, module, name: str, at: int) -> list[int]:
    """Make `module.name` raise on its `at`-th call (0 never); returns the list of calls."""
    original, calls = getattr(module, name), []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise _Interrupted
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("command", ["mia", "muse"])
def test_cli_resume_skips_finished_stages_and_equals_an_uninterrupted_run(
        world, tmp_path, monkeypatch, command):
    import uldkit.eval.mia as mia_module
    import uldkit.eval.muse as muse_module

    module, name, files = {
        "mia": (mia_module, "mia_scores", ("mia_summary.json", "mia_samples.jsonl")),
        "muse": (muse_module, "min_k_auc", ("muse_summary.json", "muse_samples.jsonl")),
    }[command]
    args = ["eval", command, "--model", str(world.target), "--retain-model", str(world.retain),
            "--people", str(PEOPLE), "--batch-size", "32"]
    if command == "muse":
        args += ["--answer-tokens", "8", "--max-continuation", "16"]
    main([*args, "--out", str(tmp_path / "whole")])

    out = tmp_path / "interrupted"
    calls = _interrupt_call(monkeypatch, module, name, at=2)  # the retain model's scores
    with pytest.raises(_Interrupted):
        main([*args, "--out", str(out)])
    assert len(calls) == 2 and not (out / files[0]).exists()
    with pytest.raises(SystemExit):  # a non-empty directory needs --resume
        main([*args, "--out", str(out)])

    calls = _interrupt_call(monkeypatch, module, name, at=0)
    main([*args, "--out", str(out), "--resume"])
    assert len(calls) == 1  # the model's own scores came from the journal
    for file in files:
        assert (out / file).read_text() == (tmp_path / "whole" / file).read_text()
    assert not list(out.glob("*.partial.jsonl"))
