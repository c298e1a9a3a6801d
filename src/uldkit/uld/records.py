"""What a ULD directory records: the manifest naming its target, and every forget request.

    adapter.safetensors    the assistant's LoRA weights (nothing else)
    forget_history.jsonl   one line per training pair of every forget request so far
    uldkit_model.json      the manifest; written last, so its presence marks a complete dir
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from uldkit.data.types import QAPair
from uldkit.errors import ConfigError, ModelError
from uldkit.io import atomic_write, atomic_write_json, atomic_write_text
from uldkit.models.decoder_stack import find_decoder_stack
from uldkit.models.fingerprint import weight_fingerprint
from uldkit.training.run_dir import ADAPTER_FILE, HISTORY_FILE, RunDir
from uldkit.uld.assistant import AssistantLora

FORMAT_VERSION = 1
ROLES = ("forget", "paraphrase", "wrong_answer")
PASSAGE_ROLE = "passage"  # a forget passage (document forget set): {"text": ...}


@dataclass
class ForgetRequest:
    """One request to forget: its QA pairs and the augmentation ULD trains on, or passages."""

    split: str
    forget: list[QAPair]
    paraphrases: list[QAPair] = field(default_factory=list)
    wrong_answers: list[QAPair] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)
    recorded_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def pairs(self, role: str) -> list[QAPair]:
        return {"forget": self.forget, "paraphrase": self.paraphrases,
                "wrong_answer": self.wrong_answers}[role]

    def summary(self, number: int) -> dict[str, Any]:
        return {"request": number, "forget_split": self.split, "recorded_at": self.recorded_at,
                "forget_pairs": len(self.forget), "paraphrase_pairs": len(self.paraphrases),
                "wrong_answer_pairs": len(self.wrong_answers),
                "passages": len(self.passages)}


@dataclass(frozen=True)
class TargetIdentity:
    """What must match between an assistant and the target it is loaded against."""

    model_type: str
    config_class: str
    vocab_size: int
    depth: int
    fingerprint: str

    @classmethod
    def of(cls, model: PreTrainedModel) -> TargetIdentity:
        config = model.config
        return cls(model_type=str(config.model_type), config_class=type(config).__name__,
                   vocab_size=int(model.get_output_embeddings().weight.shape[0]),
                   depth=len(find_decoder_stack(model)),
                   fingerprint=weight_fingerprint(model))


@dataclass(frozen=True)
class AssistantManifest:
    target: str
    identity: TargetIdentity
    layers: int
    lora: AssistantLora
    alpha: float
    tau: float
    uniform_weight: float
    requests: list[dict[str, Any]]
    training: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "uld",
            "format": FORMAT_VERSION,
            "target": self.target,
            "architecture": {"model_type": self.identity.model_type,
                             "config_class": self.identity.config_class},
            "vocab_size": self.identity.vocab_size,
            "target_layers": self.identity.depth,
            "target_fingerprint": self.identity.fingerprint,
            "assistant_layers": self.layers,
            "lora": self.lora.to_dict(),
            "alpha": self.alpha,
            "tau": self.tau,
            "uniform_weight": self.uniform_weight,
            "adapter_file": ADAPTER_FILE,
            "history_file": HISTORY_FILE,
            "training": self.training,
            "forget_requests": self.requests,
        }

    @classmethod
    def parse(cls, manifest: dict[str, Any], where: Path) -> AssistantManifest:
        file = RunDir(where).manifest
        if manifest.get("kind") != "uld":
            raise ModelError(f"{file}: kind is '{manifest.get('kind')}', not 'uld'")
        if manifest.get("format") != FORMAT_VERSION:
            raise ModelError(f"{file}: unsupported format {manifest.get('format')!r}")

        def get(name: str, kind: type | tuple[type, ...], source: dict = manifest) -> Any:
            value = source.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ModelError(f"{file}: field '{name}' is missing or malformed")
            return value

        architecture = get("architecture", dict)
        lora = get("lora", dict)
        try:
            lora_settings = AssistantLora(r=get("r", int, lora),
                                          alpha=get("alpha", (int, float), lora),
                                          dropout=get("dropout", (int, float), lora))
        except ConfigError as err:
            raise ModelError(f"{file}: field 'lora': {err}") from None
        return cls(
            target=get("target", str),
            identity=TargetIdentity(
                model_type=get("model_type", str, architecture),
                config_class=get("config_class", str, architecture),
                vocab_size=get("vocab_size", int), depth=get("target_layers", int),
                fingerprint=get("target_fingerprint", str),
            ),
            layers=get("assistant_layers", int),
            lora=lora_settings,
            alpha=float(get("alpha", (int, float))),
            tau=float(get("tau", (int, float))),
            uniform_weight=float(get("uniform_weight", (int, float))),
            requests=get("forget_requests", list),
            training=get("training", dict),
        )

    def check_target(self, model: PreTrainedModel, target_path: str, where: Path) -> None:
        """Refuse a target this assistant was not trained on, naming every difference."""
        expected = self.identity
        actual = TargetIdentity.of(model)
        differences = []
        if (expected.model_type, expected.config_class) != (actual.model_type,
                                                            actual.config_class):
            differences.append(
                f"architecture {expected.model_type}/{expected.config_class} (assistant) vs "
                f"{actual.model_type}/{actual.config_class} (target)"
            )
        if expected.vocab_size != actual.vocab_size:
            differences.append(f"vocabulary size {expected.vocab_size} (assistant) vs "
                               f"{actual.vocab_size} (target)")
        if self.layers > actual.depth:
            differences.append(f"the assistant uses {self.layers} layers but the target has "
                               f"only {actual.depth}")
        elif expected.depth != actual.depth:
            differences.append(f"depth {expected.depth} layers (assistant) vs {actual.depth} "
                               f"(target)")
        if not differences and expected.fingerprint != actual.fingerprint:
            differences.append("the weights differ (another model or another checkpoint: "
                               "weight fingerprints do not match)")
        if differences:
            raise ModelError(
                f"the ULD assistant in '{where}' does not belong to the target '{target_path}': "
                + "; ".join(differences)
            )


def write_assistant(out_dir: Path, adapters: dict, manifest: AssistantManifest,
                    requests: list[ForgetRequest]) -> None:
    atomic_write(RunDir(out_dir).adapter,
                 lambda tmp: save_file(adapters, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(RunDir(out_dir).forget_history, history_text(requests))
    atomic_write_json(RunDir(out_dir).manifest, manifest.to_dict())


def read_adapters(directory: Path) -> dict:
    file = RunDir(directory).adapter
    if not file.exists():
        raise ModelError(f"'{directory}' has no {ADAPTER_FILE}")
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors raises its own error types
        raise ModelError(f"{file}: not a readable safetensors file ({err})") from None


def history_text(requests: list[ForgetRequest]) -> str:
    lines = []
    for number, request in enumerate(requests, start=1):
        for role in ROLES:
            for pair in request.pairs(role):
                lines.append(json.dumps({
                    "request": number, "forget_split": request.split,
                    "recorded_at": request.recorded_at, "role": role,
                    "question": pair.question, "answer": pair.answer,
                }, ensure_ascii=False))
        for text in request.passages:
            lines.append(json.dumps({
                "request": number, "forget_split": request.split,
                "recorded_at": request.recorded_at, "role": PASSAGE_ROLE, "text": text,
            }, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def read_history(directory: Path) -> list[ForgetRequest]:
    file = RunDir(directory).forget_history
    if not file.exists():
        raise ModelError(f"'{directory}' has no {HISTORY_FILE}; it cannot be extended")
    requests: dict[int, ForgetRequest] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            role = record["role"]
            if role not in (*ROLES, PASSAGE_ROLE):
                raise ValueError(f"unknown role '{role}'")
            if role == PASSAGE_ROLE:
                text = record["text"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("empty passage")
            else:
                pair = QAPair(record["question"], record["answer"])
            request = requests.setdefault(int(record["request"]), ForgetRequest(
                split=str(record["forget_split"]), forget=[],
                recorded_at=str(record["recorded_at"])))
        except Exception as err:  # JSON, missing keys, DataError from QAPair
            raise ModelError(f"{file}, line {number}: malformed record ({err})") from None
        if role == PASSAGE_ROLE:
            request.passages.append(text)
        else:
            request.pairs(role).append(pair)
    return [requests[k] for k in sorted(requests)]
