"""The demo's stages shared by its TOFU and MUSE modes; each is skipped when its output exists.

A stage's summary (`RunDir.summary`) is its "done" marker: fine-tuning writes its "train"
summary last, unlearning its "unlearn" summary, the MIA audit "mia", the relearning attack
"relearn". Running the demo again on the same directory picks up where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uldkit.data.synthetic import SyntheticWorld
from uldkit.data.types import QAPair
from uldkit.demo.settings import FINETUNE_SETTINGS, DemoConfig
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json
from uldkit.models.lm import LanguageModel
from uldkit.training.run_dir import RunDir
from uldkit.training.trainer import TrainConfig

Log = Callable[[str], None]


class LazyModel:
    """A model directory loaded on first use (a resumed demo may need none of them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lm: LanguageModel | None = None

    def __call__(self) -> LanguageModel:
        if self._lm is None:
            from uldkit.unlearning.load import load_language_model

            self._lm = load_language_model(self.path)
        return self._lm


def train_seconds(model_dir: Path, kind: str = "train") -> float | None:
    """The training time a model directory's `kind` summary records (None for a model made
    elsewhere)."""
    try:
        return float(json.loads(RunDir(model_dir).summary(kind).read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finetune_stage(model_dir: Path, description: str, log: Log, **settings: Any) -> Path:
    """Fine-tune into model_dir unless it holds a finished model (FinetuneConfig settings)."""
    from uldkit.training.finetune import FinetuneConfig, finetune

    if not RunDir(model_dir).summary("train").exists():
        log(f"[demo] fine-tuning the {description}")
        finetune(FinetuneConfig(out=str(model_dir), **settings), resume=model_dir.exists())
    return model_dir


def given_model(path: str, role: str) -> Path:
    """A model directory the user gave instead of fine-tuning one."""
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"--{role} '{path}' is not a model directory (no config.json)")
    return directory


def recorded_setting(model_dir: Path, key: str) -> Any:
    """A fine-tuning setting from a model directory's run_config.json, or None."""
    return RunDir(model_dir).recorded_setting(key)


def unlearn_stage(method: str, target_dir: Path, method_dir: Path, log: Log,
                  **settings: Any) -> float | None:
    """Unlearn with `method` unless method_dir holds a finished result (UnlearnConfig
    settings); returns the training time."""
    from uldkit.unlearning.run import UnlearnConfig, unlearn

    if not RunDir(method_dir).summary("unlearn").exists():
        log(f"[demo] unlearning with {method}")
        unlearn(UnlearnConfig(method=method, model=str(target_dir), out=str(method_dir),
                              **settings), resume=method_dir.exists())
    return train_seconds(method_dir, "unlearn")


# --- membership inference --------------------------------------------------------------------
@dataclass(frozen=True)
class MiaTexts:
    """Members (forget) and non-members (holdout) for the audit; with questions, the texts
    are answers scored after their question prompt."""

    forget: list[str]
    holdout: list[str]
    description: str
    forget_questions: list[str] | None = None
    holdout_questions: list[str] | None = None


def pair_mia_texts(forget: Sequence[QAPair], holdout: Sequence[QAPair],
                   holdout_source: str) -> MiaTexts:
    """QA mode: the forget answers (trained) against `holdout` answers (never trained),
    each scored after its question; `holdout_source` says where the non-members come from."""
    if not holdout:
        raise ConfigError("the MIA audit needs held-out answers: the holdout set is empty")
    return MiaTexts(
        forget=[p.answer for p in forget], holdout=[p.answer for p in holdout],
        forget_questions=[p.question for p in forget],
        holdout_questions=[p.question for p in holdout],
        description=(f"answers to the {len(forget)} forget questions vs the {len(holdout)} "
                     f"answers {holdout_source} (answer tokens scored after the question)"),
    )


def qa_mia_texts(world: SyntheticWorld, forget: Sequence[QAPair]) -> MiaTexts:
    """TOFU mode: the forget answers (trained as QA) against the held-out people's answers
    (never trained; the same questions about other people)."""
    holdout = [fact.pair for person in world.holdout for fact in world.facts[person.name]]
    if not holdout:
        raise ConfigError("the MIA audit needs held-out people (holdout > 0)")
    return pair_mia_texts(forget, holdout, f"about {len(world.holdout)} held-out people")


def mia_stage(path: Path, model: LazyModel, retain: LazyModel, texts: MiaTexts) -> dict:
    """The MIA block of a results row: every attack's AUC beside the retain model's, the
    verdicts, and which attacks still separate forget from holdout."""
    from uldkit.eval.mia import mia_audit

    if path.exists():
        return json.loads(path.read_text())
    report = mia_audit(model(), texts.forget, texts.holdout, retain_lm=retain(),
                       forget_questions=texts.forget_questions,
                       holdout_questions=texts.holdout_questions)
    block = {"texts": texts.description, **report.summary_dict()}
    atomic_write_json(path, block)
    return block


# --- the relearning attack -------------------------------------------------------------------
def relearn_stage(method: str, method_dir: Path, target_dir: Path, attack_dir: Path,
                  log: Log, **settings: Any) -> dict:
    """The relearning attack on one unlearned model (RelearnConfig settings); its summary."""
    from uldkit.attacks.relearn import RelearnConfig, relearn_attack

    summary_file = RunDir(attack_dir).summary("relearn")
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    log(f"[demo] relearning attack on {method}")
    # a directory without relearn.json is an interrupted attack: start it over
    return relearn_attack(RelearnConfig(model=str(method_dir), out=str(attack_dir),
                                        original=str(target_dir), **settings),
                          overwrite=attack_dir.exists(), show_progress=False)


# --- the quantisation attack -----------------------------------------------------------------
def quantize_stage(method: str, method_dir: Path, target_dir: Path, attack_dir: Path,
                   log: Log, **settings: Any) -> dict:
    """The quantisation attack on one unlearned model (QuantizeConfig settings); its summary."""
    from uldkit.attacks.quantize import QuantizeConfig, quantize_attack

    summary_file = RunDir(attack_dir).summary("quantize")
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    log(f"[demo] {settings.get('bits')}-bit quantisation attack on {method}")
    return quantize_attack(QuantizeConfig(model=str(method_dir), out=str(attack_dir),
                                          original=str(target_dir), **settings),
                           overwrite=attack_dir.exists())


def demo_models(config: DemoConfig, out: Path, log, target_settings: dict[str, Any],
                retain_settings: dict[str, Any],
                training: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """The target and retain model directories: given, or fine-tuned (resumably) with
    `training` (default FINETUNE_SETTINGS of the size)."""
    if config.target is not None:
        return given_model(config.target, "target"), given_model(config.retain, "retain")
    models = []
    for name, settings in (("target", target_settings), ("retain", retain_settings)):
        train = TrainConfig(seed=config.seed, description=f"fine-tuning {name}",
                            **(training or FINETUNE_SETTINGS[config.size]))
        models.append(finetune_stage(
            out / name, f"{name} model", log, train=train, size=config.size,
            people=config.people, holdout_people=config.holdout, **settings))
    return models[0], models[1]
