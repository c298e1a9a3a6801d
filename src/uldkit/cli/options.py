"""Options shared by several commands, so they read and behave the same everywhere."""

from __future__ import annotations

from typing import Any

import typer

DATA_HELP = ("Where the QA data comes from: 'synthetic' (the built-in fictitious world), "
             "'tofu' (TOFU: the folder $ULDKIT_TOFU_DIR, else the locuslab/TOFU hub dataset), "
             "a folder in TOFU's layout, a JSON/JSONL file, or a hub dataset id (owner/name).")
DATA = typer.Option("synthetic", "--data", help=DATA_HELP)
# Document evaluation (eval muse / eval mia): passages, not QA pairs.
DOCUMENT_DATA = typer.Option(
    "synthetic", "--data",
    help="'synthetic' (the built-in world's biographies); your own passages come with "
    "--forget-docs/--holdout-docs instead.")
PEOPLE = typer.Option(40, "--people", min=2, help="Synthetic world: number of people.")
DATA_SEED = typer.Option(0, "--data-seed", help="Synthetic world: its random seed.")
SEED = typer.Option(0, "--seed", help="Training seed (initialisation, data order).")
SEEDS = typer.Option(
    1, "--seeds", help="Run with this many seeds (--seed, --seed + 1, ...), each in OUT/seed-<s>/, "
    "and report every figure as its mean over them with the sample std and min-max (the "
    "seeds' values are in the results JSON).")
RESUME = typer.Option(False, "--resume", help="Continue from the last complete checkpoint.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing output directory.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA if present).")
ALLOW_PICKLE = typer.Option(
    False, "--allow-pickle", help="Allow pickle-based weights (can run arbitrary code)."
)
TRUST_REMOTE_CODE = typer.Option(
    False, "--trust-remote-code", help="Allow the model directory's own Python code to run."
)


def training_option(name: str, default: Any, flag: str, note: str = "") -> Any:
    """An option for the TrainConfig field `name`: its help line and bounds come from the
    field (an inclusive lower bound is also enforced by the parser; every bound is checked
    when the TrainConfig is built)."""
    from uldkit.training.config import TrainConfig
    from uldkit.training.schema import setting_of

    setting = setting_of(TrainConfig, name)
    low = None if setting.exclusive_min else setting.min
    shown = setting.bounds() and not (low is not None and setting.max is None)
    bounds = f" Must be {setting.bounds()}." if shown else ""
    return typer.Option(default, flag, min=low, help=f"{setting.help}{bounds} {note}".strip())
ULD_FILTER = typer.Option(
    None, "--filter", help="ULD: relative-top filter, strict (uldkit's default: tokens outside "
    "it have probability 0) or reference (the ULD authors' code: keeps at least tau x the "
    "vocabulary, and scores outside it with the target's own log-probabilities; without "
    "--tau, the authors' tau 0.1).")

# What every `uldkit attack ...` command takes about the model it attacks.
ATTACKED_MODEL = typer.Option(..., "--model", help="Unlearned model directory (plain, ULD or "
                              "offset); only read.")
ATTACK_FORGET = typer.Option("forget10", "--forget", help="Forget split: forget01/05/10.")
ATTACK_ORIGINAL = typer.Option(
    None, "--original", help="The original target, for comparison (default: the target the "
    "model's uldkit_model.json names).")
ATTACK_MAX_NEW_TOKENS = typer.Option(
    None, "--max-new-tokens", min=1,
    help="Cap on greedy answer tokens; default: TOFU's 200 tokens of prompt + answer.")
