"""Kill-and-resume checks: run `uldkit unlearn` in a subprocess, SIGKILL it, resume it, and
compare what it saved with an uninterrupted run's weights.

Shared by `tests/test_kill_resume.py` (one kill, small run) and `scripts/kill_resume.py`
(several kills at random moments, longer runs).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from uldkit.training.run_dir import Checkpoint, RunDir


def unlearn_command(
    method: str,
    target: str | os.PathLike,
    out: str | os.PathLike,
    *,
    people: int,
    forget: str = "forget10",
    epochs: int = 2,
    batch_size: int = 4,
    checkpoint_every: int = 1,
    seed: int = 3,
    params: Sequence[str] = (),
    device: str | None = None,
) -> list[str]:
    """The `uldkit unlearn` command line of one run (add "--resume" to continue it)."""
    command = [sys.executable, "-m", "uldkit", "unlearn", "--method", method,
               "--model", str(target), "--people", str(people), "--forget", forget,
               "--out", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--checkpoint-every", str(checkpoint_every), "--seed", str(seed)]
    for param in params:
        command += ["--param", param]
    if device is not None:
        command += ["--device", device]
    return command


def complete_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the run's complete checkpoints (with their COMPLETE marker), ascending."""
    checkpoints = RunDir(Path(run_dir)).checkpoints
    if not checkpoints.is_dir():
        return []
    return sorted(step for d in checkpoints.iterdir()
                  if (step := Checkpoint.step_of(d)) is not None
                  and Checkpoint(d).complete_marker.exists())


@dataclass(frozen=True)
class KillOutcome:
    killed: bool  # False: the process ended by itself first
    returncode: int
    seconds: float


def run_and_kill(
    command: Sequence[str],
    ready: Callable[[], bool],
    *,
    delay: float = 0.0,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    poll: float = 0.02,
) -> KillOutcome:
    """Start `command`; once `ready()` holds, wait `delay` seconds and SIGKILL it.

    A process that ends by itself first is not an error: the outcome says so.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: it cannot fill up and block
        process = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL,
                                   stderr=errors)
        try:
            deadline = started + timeout
            while process.poll() is None and not ready():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not ready within {timeout:.0f}s: {' '.join(command)}")
                time.sleep(poll)
            if process.poll() is None:
                time.sleep(delay)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    killed = process.returncode == -signal.SIGKILL
    if not killed and process.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"run failed (exit {process.returncode}): {last[0]}")
    return KillOutcome(killed, process.returncode, time.monotonic() - started)


def saved_tensors(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of the run's saved `*.safetensors` (weights or adapters), by file:name."""
    files = sorted(Path(run_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no weights saved in {run_dir}")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        tensors.update({f"{file.name}:{k}": v.float().numpy() for k, v in load_file(file).items()})
    return tensors


def max_abs_difference(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]
) -> tuple[float, str | None]:
    """The largest absolute difference over all tensors and where it is; inf when the two
    runs saved different tensor names or shapes."""
    if expected.keys() != actual.keys():
        odd = sorted(expected.keys() ^ actual.keys())[0]
        return float("inf"), odd
    worst, where = 0.0, None
    for name, value in expected.items():
        if value.shape != actual[name].shape:
            return float("inf"), name
        difference = float(np.max(np.abs(value - actual[name]), initial=0.0))
        if math.isnan(difference):
            return float("inf"), name
        if difference > worst:
            worst, where = difference, name
    return worst, where
