"""The run directory and resume: a resume with other settings is refused before anything is
touched, --overwrite keeps the finished run until the new one has finished, and a trainer
checkpoint restores every RNG and the fp16 loss scaler (an interrupted run resumes bit for
bit, on CPU and on CUDA) and is refused for other settings."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradScalerKwargs
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

import uldkit.cli.finetune_cmd  # noqa: F401  (registers the commands these tests run)
import uldkit.cli.unlearn_cmd  # noqa: F401
from uldkit import cli
from uldkit.cli import main
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json
from uldkit.training.losses import NextTokenObjective
from uldkit.training.run_dir import Checkpoint, RunDir
from uldkit.training.run_start import building_dir
from uldkit.training.trainer import StreamData, TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _only_these_commands(monkeypatch):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)


def _fails_in_one_line(args, capsys, *expected) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def _snapshot(directory) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: its bytes and modification time."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _unlearn(target, out, *extra: str) -> list[str]:
    return ["unlearn", "--method", "grad_ascent", "--model", str(target), "--people", "20",
            "--forget", "forget10", "--epochs", "1", "--batch-size", "8", "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def finished_run(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "unlearned"
    main_ok(_unlearn(trained_world.target, out))
    return out


def main_ok(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as done:
        assert done.code in (0, None), args


# --- issue 18 item 6: a resume with other settings --------------------------------------------
@pytest.mark.parametrize("change, setting", [
    (["--lr", "3e-5"], "lr = (not set), now 3e-05"),
    (["--method", "npo"], 'method = "grad_ascent", now "npo"'),
    (["--forget", "forget05"], 'config.forget = "forget10", now "forget05"'),
])
def test_resume_with_other_settings_is_refused_before_any_file_is_touched(
        trained_world, finished_run, capsys, change, setting):
    before = _snapshot(finished_run)
    args = _unlearn(trained_world.target, finished_run, "--resume")
    if change[0] == "--method":
        args[args.index("--method") + 1] = change[1]
    elif change[0] == "--forget":
        args[args.index("--forget") + 1] = change[1]
    else:
        args += change
    _fails_in_one_line(args, capsys, "cannot resume", setting, "--overwrite")
    assert _snapshot(finished_run) == before


def test_resume_with_the_same_settings_still_continues(trained_world, finished_run, capsys):
    before = RunDir(finished_run).summary("unlearn").read_bytes()
    main_ok(_unlearn(trained_world.target, finished_run, "--resume", "--device", "cpu"))
    assert "done grad_ascent" in capsys.readouterr().out
    assert RunDir(finished_run).summary("unlearn").read_bytes() != before  # rewritten


def test_finetune_resume_with_other_settings_is_refused(tmp_path, capsys):
    args = ["finetune", "--split", "forget10", "--people", "10", "--no-general",
            "--epochs", "1", "--vocab-size", "300", "--out", str(tmp_path / "run")]
    main_ok(args)
    before = _snapshot(tmp_path / "run")
    _fails_in_one_line([*args, "--resume", "--epochs", "2"], capsys, "train.epochs = 1, now 2")
    assert _snapshot(tmp_path / "run") == before


# --- issue 13: a run made before the hyperparameter schemas still resumes ------------------
def _pre_schema_uld_record(target, out) -> dict:
    """run_config.json as uldkit wrote it before the schemas (commit 07f89fa^): ULD recorded
    only the hyperparameters the user gave, not the defaults it used."""
    return {"command": "unlearn", "config": {
        "method": {"method": "uld", "hyperparameters": {"assistant_layers": 2}},
        "model": str(target), "out": str(out), "data": "synthetic", "forget": "forget01",
        "retain": None, "forget_documents": None, "retain_documents": None, "people": 20,
        "data_seed": 0, "max_length": 128, "refusals": None,
        "hyperparameters": {"assistant_layers": 2},
        "train_overrides": {"epochs": 1, "seed": 0}, "device": None, "allow_pickle": False,
        "trust_remote_code": False,
        "train": {"epochs": 1, "batch_size": 8, "grad_accum": 1, "lr": 0.001,
                  "weight_decay": 0.0, "warmup_ratio": 0.0, "scheduler": "linear",
                  "max_grad_norm": 1.0, "seed": 0, "max_steps": None, "checkpoint_every": 0,
                  "keep_checkpoints": 2, "padding_side": "right", "show_progress": True,
                  "description": "unlearning (uld)"},
        "forget_examples": 10, "retain_examples": 190, "forget_passages": None,
        "retain_passages": None, "streams": {"forget": 30, "retain": 220}},
        "environment": {"python": "3.11.7", "packages": {"uldkit": "0.1.0"}}}


def test_a_run_recorded_before_the_schemas_resumes_and_a_real_difference_is_named(
        trained_world, tmp_path, capsys):
    out = tmp_path / "old_uld"
    args = ["unlearn", "--method", "uld", "--model", str(trained_world.target), "--people", "20",
            "--forget", "forget01", "--epochs", "1", "--seed", "0",
            "--param", "assistant_layers=2", "--out", str(out)]
    main_ok(args)
    atomic_write_json(RunDir(out).config, _pre_schema_uld_record(trained_world.target, out))
    before = _snapshot(out)
    # a default the old record left out is not a difference; one the user now changes is
    _fails_in_one_line([*args, "--resume", "--param", "lora_r=8"], capsys, "cannot resume",
                       "config.method.hyperparameters.lora_r = 16, now 8")
    assert _snapshot(out) == before
    main_ok([*args, "--resume"])
    assert "done uld" in capsys.readouterr().out
    recorded = RunDir(out).read_config()["config"]["method"]["hyperparameters"]
    assert recorded["assistant_layers"] == 2 and recorded["lora_r"] == 16


# --- issue 18 item 7: --overwrite keeps the finished run until the new one finished ---------
def test_overwrite_that_fails_part_way_keeps_the_finished_run(trained_world, tmp_path, capsys):
    out = tmp_path / "run"
    main_ok(_unlearn(trained_world.target, out))
    before = _snapshot(out)
    # lr 1e30 diverges in the first steps: the new run fails after it started writing
    _fails_in_one_line(_unlearn(trained_world.target, out, "--overwrite", "--lr", "1e30",
                                "--batch-size", "4", "--grad-accum", "1"), capsys, "non-finite")
    assert _snapshot(out) == before
    # what a failed or killed overwrite left beside it does not stand in the next run's way
    building_dir(out).mkdir(exist_ok=True)
    (building_dir(out) / "run_config.json").write_text("{half")
    main_ok(_unlearn(trained_world.target, out, "--overwrite", "--lr", "2e-5"))
    assert not building_dir(out).exists()
    record = RunDir(out).read_config()
    assert record["config"]["train"]["lr"] == 2e-5
    assert RunDir(out).manifest.is_file() and RunDir(out).summary("unlearn").is_file()


# --- trainer checkpoints ------------------------------------------------------------------------
def _tiny_model(seed: int = 0, **config) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, **config))


def _examples(offset: int = 0) -> list[Encoded]:
    return [Encoded([1, 2 + i + offset, 3 + i, 4, 5], [IGNORE_INDEX, 2 + i + offset, 3 + i, 4, 5])
            for i in range(6)]


def _trainer(checkpoints, accelerator=None, examples=None, **settings) -> Trainer:
    config = TrainConfig(**{"epochs": 1, "batch_size": 2, "lr": 1e-3, "max_steps": 2,
                            "show_progress": False, **settings})
    return Trainer(_tiny_model(), NextTokenObjective("train"),
                   StreamData({"train": examples or _examples()}, primary="train"), config,
                   pad_token_id=0, checkpoint_dir=checkpoints,
                   accelerator=accelerator or Accelerator(cpu=True))


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), np.random.randn(), float(torch.rand(1))


def test_checkpoint_restores_the_python_numpy_and_torch_rngs(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train()  # the last step is checkpointed
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    trainer.save_checkpoint(trainer.total_steps)
    expected = _draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    resumed = _trainer(tmp_path)
    assert resumed.train(resume=True).resumed_from == trainer.total_steps  # nothing left to do
    assert _draws() == expected


def test_checkpoint_of_other_settings_or_data_is_refused(tmp_path):
    _trainer(tmp_path).train()
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0.001 now 0.002\)"):
        _trainer(tmp_path, lr=2e-3).train(resume=True)
    with pytest.raises(ConfigError, match="data_sha256"):
        _trainer(tmp_path, examples=_examples(offset=1)).train(resume=True)
    # how the run is watched and kept may change
    result = _trainer(tmp_path, keep_checkpoints=3, checkpoint_every=1).train(resume=True)
    assert result.resumed_from == 2


def _overflowing_accelerator() -> Accelerator:
    """fp16 loss scaling as on a GPU (accelerate makes a scaler only there), with a scale so
    large that every scaled loss overflows: the scaler must skip every optimizer step."""
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=3e38)
    return accelerator


def test_a_step_the_scaler_skipped_does_not_step_the_schedule(tmp_path):
    trainer = _trainer(tmp_path, accelerator=_overflowing_accelerator())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.scheduler.last_epoch == 0
    assert trainer.scheduler.get_last_lr() == [1e-3]
    for name, value in trainer.model.named_parameters():
        assert torch.equal(value.detach(), before[name]), name
    scale = trainer.accelerator.scaler.get_scale()
    assert scale < 3e38
    # the scaler's state is checkpointed (as JSON) and restored
    resumed = _trainer(tmp_path, accelerator=_overflowing_accelerator())
    resumed.train(resume=True)
    assert resumed.accelerator.scaler.get_scale() == scale
    checkpoint = sorted(p for p in tmp_path.iterdir() if p.name.startswith("step-"))[-1]
    assert (checkpoint / "scaler.json").is_file()
    assert not [p for p in checkpoint.iterdir() if p.suffix not in (".json", ".safetensors", "")]


# --- issue 18 item 13: an interrupted run resumes bit for bit, on CPU and on CUDA -------------
class _Interrupted(Exception):
    """Stands for the process dying after a step (the checkpoint before it is on disk)."""


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one state per process whose device and mixed precision cannot change
    once set: these tests choose their own, and leave none behind for the next test."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _lora_trainer(checkpoints, device: str, stop_at: int | None = None) -> Trainer:
    """LoRA with dropout (it draws from the device's RNG) on a tiny model; on CUDA in fp16 mixed
    precision with a loss scaler that grows every step, so it overflows and skips some steps."""
    # eager attention: its backward has no atomics, so a CUDA run repeats itself exactly
    model = get_peft_model(_tiny_model(attn_implementation="eager"), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["q_proj", "v_proj", "down_proj"]))
    if device == "cuda":
        accelerator = Accelerator(mixed_precision="fp16",
                                  kwargs_handlers=[GradScalerKwargs(growth_interval=1)])
        assert accelerator.scaler is not None
    else:
        accelerator = Accelerator(cpu=True, mixed_precision="no")

    def interrupt(step: int, loss: float) -> None:
        if step == stop_at:
            raise _Interrupted(step)

    config = TrainConfig(epochs=3, batch_size=2, lr=1e-2, checkpoint_every=1,
                         show_progress=False)
    return Trainer(model, NextTokenObjective("train"),
                   StreamData({"train": _examples()}, primary="train"), config, pad_token_id=0,
                   checkpoint_dir=checkpoints, accelerator=accelerator, on_step=interrupt)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, device, fresh_accelerate_state):
    straight = _lora_trainer(tmp_path / "straight", device)
    initial = {n: t.clone() for n, t in straight.trainable_state().items()}
    straight.train()
    expected = straight.trainable_state()
    assert any(not torch.equal(expected[n], initial[n]) for n in expected)

    with pytest.raises(_Interrupted):  # dies in step 6; step 5's checkpoint is complete
        _lora_trainer(tmp_path / "run", device, stop_at=6).train()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # and every CUDA device's RNG
    resumed = _lora_trainer(tmp_path / "run", device)
    assert resumed.train(resume=True).resumed_from == 5
    actual = resumed.trainable_state()
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name

    checkpoint = resumed.latest_checkpoint()
    rng = load_file(str(Checkpoint(checkpoint).rng_tensors(0)))
    assert ("cuda.0" in rng) == (device == "cuda")
    assert Checkpoint(checkpoint).scaler.is_file() == (device == "cuda")
    if device == "cuda":
        saved = json.loads(Checkpoint(checkpoint).scaler.read_text())
        assert saved["scale"] == resumed.accelerator.scaler.get_scale()
        assert resumed.accelerator.scaler.get_scale() == straight.accelerator.scaler.get_scale()


@pytest.mark.parametrize("overwrite", [False, True])
def test_every_process_passes_the_checks_before_the_main_one_writes(tmp_path, overwrite):
    from uldkit.training.run_start import check_out_dir, open_run

    out = tmp_path / "run"
    if overwrite:
        out.mkdir()
        (out / "old.txt").write_text("a finished run")
    seen_at_barrier = []

    def slower_process_checks():
        # What another rank does while the main one waits: the directory must still look
        # as it did before the run began.
        check_out_dir(out, overwrite=overwrite, resume=False)
        seen_at_barrier.append(RunDir(out).read_config())

    run = open_run(out, "finetune", {"seed": 1}, overwrite=overwrite,
                   wait_for_everyone=slower_process_checks)
    assert seen_at_barrier == [None]
    assert run.read_config()["config"] == {"seed": 1}
    with pytest.raises(ConfigError, match="already holds files"):
        check_out_dir(out if not overwrite else building_dir(out), overwrite=False,
                      resume=False)
