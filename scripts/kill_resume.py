"""Crash an unlearning run again and again, resume it each time, and check it ends where an
uninterrupted run ends (not a test: a driver for longer runs than the test suite's).

    python scripts/kill_resume.py --method uld --kills 3 --seed 0
    python scripts/kill_resume.py --method grad_diff --kills 5 --seed 1 --size small
    python scripts/kill_resume.py --method npo --kills 2 --model runs/demo/target --people 40

Steps: fine-tune a target (or take `--model DIR`); run `uldkit unlearn` to the end; then run
it again and SIGKILL it `--kills` times: at random steps (once that step's checkpoint, and
one newer than where the run resumed, is complete), after a random part of one checkpoint
interval, so that some kills land while a checkpoint is being written; resume with
`--resume` after each kill, and let the last resume finish. Prints the largest absolute difference between the two runs' saved weights
(adapters, for ULD) and a PASS/FAIL line; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kill_resume_harness import (  # noqa: E402
    complete_steps,
    max_abs_difference,
    run_and_kill,
    saved_tensors,
    unlearn_command,
)

from uldkit.training.run_dir import Checkpoint, RunDir  # noqa: E402


def main() -> int:
    args = _parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kill_resume_"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rng = random.Random(args.seed)
    try:
        target = Path(args.model) if args.model else _train_target(work / "target", args)
        straight, killed = work / "straight", work / "killed"
        for run in (straight, killed):
            shutil.rmtree(run, ignore_errors=True)

        def command(out: Path) -> list[str]:
            return unlearn_command(args.method, target, out, people=args.people,
                                   forget=args.forget, epochs=args.epochs,
                                   batch_size=args.batch_size, seed=args.seed,
                                   checkpoint_every=args.checkpoint_every, params=args.param)

        started = time.monotonic()
        _run(command(straight), env)
        straight_seconds = time.monotonic() - started
        total = max(complete_steps(straight))
        step_seconds = _seconds_per_checkpoint(straight, straight_seconds / total)
        print(f"uninterrupted: {total} steps in {straight_seconds:.1f}s "
              f"({step_seconds:.2f}s per checkpoint interval)", flush=True)

        # Kill points: random steps, each followed by a random part of a checkpoint interval
        # (so that some kills land while a checkpoint is being written).
        kill_steps = sorted(rng.sample(range(1, total), min(args.kills, total - 1)))
        kills = 0
        for attempt, kill_step in enumerate(kill_steps):
            seen = max(complete_steps(killed), default=0)
            wanted = max(kill_step, seen + 1)
            delay = rng.uniform(0, step_seconds)
            run = command(killed) + (["--resume"] if attempt else [])
            outcome = run_and_kill(run, lambda wanted=wanted: max(
                complete_steps(killed), default=0) >= wanted, delay=delay, env=env,
                timeout=args.timeout)
            if not outcome.killed:
                print(f"kill {attempt + 1}: the run finished first (resumed at step {seen}); "
                      "no more kills", flush=True)
                break
            kills += 1
            print(f"kill {attempt + 1}: SIGKILL {delay:.2f}s after checkpoint {wanted} was "
                  f"complete (run resumed at step {seen}); complete checkpoints now "
                  f"{complete_steps(killed)}, half-written: {_partial(killed)}", flush=True)
        resumed = subprocess.run([*command(killed), "--resume"], env=env, capture_output=True,
                                 text=True, timeout=args.timeout)
        if resumed.returncode != 0:
            print(resumed.stderr.strip().splitlines()[-1:], file=sys.stderr)
            print(f"FAIL: the final resume exited with {resumed.returncode}")
            return 1

        difference, where = max_abs_difference(saved_tensors(straight), saved_tensors(killed))
        passed = difference <= args.atol and kills > 0
        verdict = "PASS" if passed else "FAIL"
        where_text = f" (at {where})" if where else ""
        print(f"{verdict}: {args.method}, {kills} SIGKILL(s) of {args.kills} asked, resumed "
              f"{kills} time(s); max abs difference from the uninterrupted run "
              f"{difference:.3g}{where_text}, tolerance {args.atol:g}")
        if kills == 0:
            print("(no kill happened: use more --epochs or a smaller --checkpoint-every)")
        return 0 if passed else 1
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _train_target(out: Path, args: argparse.Namespace) -> Path:
    if (out / "train_summary.json").exists():
        return out
    import torch

    from uldkit.training.finetune import FinetuneConfig, finetune
    from uldkit.training.trainer import TrainConfig

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    finetune(FinetuneConfig(
        out=str(out), splits=["full"], people=args.people, size=args.size, vocab_size=768,
        train=TrainConfig(epochs=args.target_epochs, batch_size=16, lr=3e-3, warmup_ratio=0.05,
                          seed=args.seed, show_progress=False),
    ), overwrite=True)
    print(f"target ({args.size}, {args.people} people) trained in "
          f"{time.monotonic() - started:.1f}s", flush=True)
    return out


def _seconds_per_checkpoint(run_dir: Path, fallback: float) -> float:
    """The time between the run's last two checkpoints (their COMPLETE markers)."""
    checkpoints = RunDir(run_dir).checkpoints
    markers = [Checkpoint.final(checkpoints, step).complete_marker
               for step in complete_steps(run_dir)[-2:]]
    if len(markers) < 2:
        return fallback
    return max(0.0, markers[1].stat().st_mtime - markers[0].stat().st_mtime) or fallback


def _partial(run_dir: Path) -> list[str]:
    checkpoints = RunDir(run_dir).checkpoints
    return sorted(p.name for p in checkpoints.glob(".*.partial")) if checkpoints.is_dir() else []


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"FAIL: {' '.join(command[2:5])} exited {done.returncode}: {last[0]}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="uld", help="any registered method (uldkit methods)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the run (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="kill moments and training seed")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny",
                        help="size of the target trained here (without --model)")
    parser.add_argument("--model", help="an existing target model directory")
    parser.add_argument("--people", type=int, default=20, help="synthetic world size")
    parser.add_argument("--forget", default="forget10")
    parser.add_argument("--epochs", type=int, default=3, help="unlearning epochs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=1, help="steps")
    parser.add_argument("--target-epochs", type=int, default=25)
    parser.add_argument("--param", action="append", default=[], help="method KEY=VALUE")
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--work", help="working directory (kept); default: a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
