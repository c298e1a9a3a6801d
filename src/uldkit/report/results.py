"""Reading run results for reports: `results.json` (several methods) or `summary.json` (one).

`results.json`:
    {"target": SUMMARY, "retain": SUMMARY, "methods": {NAME: SUMMARY, ...}, "config": {...},
     "benchmark": "tofu" | "muse" (optional), "skipped": {NAME: reason} (optional)}
`summary.json`:
    {"method": NAME, ...SUMMARY keys...}
SUMMARY holds forget_quality, model_utility, forget_rouge, forget_prob (numbers, or null
when not measured), or instead a "muse" object (MUSE's figures, `MuseSummary.to_dict()`);
optionally train_seconds, samples: [{"question", "truth", "generated"}],
forget_exact_memorisation, forget_extraction_strength, forget_answer_fluency {...},
"mia" (`MiaReport.summary_dict()`, optionally with "texts") and "relearn" (the relearning
attack's relearn.json). Target and retain are optional; other keys are kept but not shown.
A run over several seeds holds the means in those places and every figure's spread under
"over_seeds" (`uldkit.report.seeds`); each model carries its own (`ModelResult.spread`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from uldkit.errors import DataError
from uldkit.report.seeds import Spread, seeds_of, spreads
from uldkit.training.run_dir import RunDir

METRIC_KEYS = ("forget_quality", "model_utility", "forget_rouge", "forget_prob")
MUSE_KEYS = ("verbmem_forget", "knowmem_forget", "privleak", "knowmem_retain",
             "utility_preserved")
MEMORISATION_KEYS = ("forget_exact_memorisation", "forget_extraction_strength")
SAMPLE_KEYS = ("question", "truth", "generated")
RELEARN_KEYS = ("before", "after", "original", "recovered")


@dataclass(frozen=True)
class AttackAuc:
    attack: str
    auc: float
    retain_auc: float | None
    separates: bool
    verdict: str


@dataclass(frozen=True)
class MiaResult:
    """A model's membership-inference audit: every attack's AUC and the conclusion."""

    attacks: tuple[AttackAuc, ...]
    conclusion: str
    texts: str | None = None


@dataclass(frozen=True)
class RelearnResult:
    """The relearning attack on a model: held-out Prob./ROUGE before and after, etc."""

    attack: str
    trained_on: int | None
    held_out: int | None
    steps: int | None
    before: dict[str, float | None]
    after: dict[str, float | None]
    original: dict[str, float | None] | None
    recovered: dict[str, float | None]


@dataclass(frozen=True)
class QuantizeResult:
    """The quantisation attack on a model: forget-set Prob./ROUGE before and after."""

    attack: str
    bits: int
    before: dict[str, float | None]
    after: dict[str, float | None]
    original: dict[str, float | None] | None
    recovered: dict[str, float | None]


@dataclass(frozen=True)
class AnswerSample:
    question: str
    truth: str
    generated: str


@dataclass(frozen=True)
class ModelResult:
    """One model's figures; role is "method", "target" or "retain"."""

    name: str
    role: str
    forget_quality: float | None
    model_utility: float | None
    forget_rouge: float | None
    forget_prob: float | None
    train_seconds: float | None = None
    samples: tuple[AnswerSample, ...] = ()
    exact_memorisation: float | None = None
    extraction_strength: float | None = None
    fluency: dict[str, float] | None = None  # memorisation.Fluency.to_dict()
    muse: dict[str, float | None] | None = None  # MUSE_KEYS
    mia: MiaResult | None = None
    relearn: RelearnResult | None = None
    # ULD's alpha, tau and relative-top filter, where the figures were made with them
    inference: dict[str, Any] | None = None
    quantize: tuple[QuantizeResult, ...] = ()  # one per bit width, as run
    # over seeds: each figure's spread, keyed by its summary key ("forget_quality",
    # "muse/knowmem_forget"); empty for a single run
    spread: dict[str, Spread] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResults:
    name: str
    path: Path
    models: tuple[ModelResult, ...]
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it was not run
    seeds: tuple[int, ...] = ()  # the seeds its figures are means over (empty: one run)

    @property
    def methods(self) -> tuple[ModelResult, ...]:
        return tuple(model for model in self.models if model.role == "method")

    @property
    def is_muse(self) -> bool:
        return any(model.muse is not None for model in self.models)


def load_run(run_dir: str | Path) -> RunResults:
    """Read one run directory's results.json (preferred) or summary.json."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise DataError(f"{directory}: run directory not found")
    run = RunDir(directory)
    results_path, summary_path = run.summary("results"), run.summary("eval")
    for path, parse in ((results_path, _parse_results), (summary_path, _parse_summary)):
        if path.is_file():
            data = _read_object(path)
            return replace(parse(data, path, directory), seeds=tuple(seeds_of(data)))
    raise DataError(f"{directory}: holds neither {results_path.name} nor {summary_path.name}")


def _parse_results(data: dict[str, Any], source: Path, directory: Path) -> RunResults:
    methods = data.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise DataError(f"{source}: 'methods' must be a non-empty object of method summaries")
    models = [_parse_model(summary, name, "method", source, f"methods.{name}",
                           spreads(data, f"methods/{name}"))
              for name, summary in methods.items()]
    for role in ("target", "retain"):
        if data.get(role) is not None:
            models.append(_parse_model(data[role], role, role, source, role,
                                       spreads(data, role)))
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise DataError(f"{source}: 'config' must be an object")
    skipped = data.get("skipped") or {}
    if not isinstance(skipped, dict) or not all(isinstance(v, str) for v in skipped.values()):
        raise DataError(f"{source}: 'skipped' must be an object of method: reason")
    return RunResults(directory.name, directory, tuple(models), config, skipped)


def _parse_summary(data: dict[str, Any], source: Path, directory: Path) -> RunResults:
    if "method" not in data and isinstance(data.get("figures"), dict):
        return _parse_tofu_eval(data, source, directory)
    if "method" not in data and isinstance(data.get("sweep"), list):
        return _parse_alpha_sweep(data, source, directory)
    name = data.get("method")
    if not isinstance(name, str) or not name:
        raise DataError(f"{source}: 'method' must name the method (a non-empty string)")
    model = _parse_model(data, name, "method", source, "summary", spreads(data))
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    return RunResults(directory.name, directory, (model,), config)


def _parse_tofu_eval(data: dict[str, Any], source: Path, directory: Path) -> RunResults:
    """An `uldkit eval tofu` output directory: its model, named after the model's directory
    (settings such as alpha kept), scored by its figures."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise DataError(f"{source}: 'model' must name the evaluated model (a non-empty string)")
    path, _, settings = model.partition(" (")
    name = Path(path).name + (f" ({settings}" if settings else "")
    result = _parse_model(data["figures"], name, "method", source, "figures",
                          spreads(data, "figures"))
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    if isinstance(settings.get("inference"), dict):
        result = replace(result, inference=settings["inference"])
    return RunResults(directory.name, directory, (result,), {"settings": data.get("settings")})


def _parse_alpha_sweep(data: dict[str, Any], source: Path, directory: Path) -> RunResults:
    """An `uldkit eval tofu --alpha A --alpha B ...` directory: one model per alpha."""
    model = data.get("model")
    if not isinstance(model, str) or not model or not data["sweep"]:
        raise DataError(f"{source}: an alpha sweep needs 'model' and a non-empty 'sweep'")
    results = []
    for index, row in enumerate(data["sweep"]):
        alpha = row.get("alpha") if isinstance(row, dict) else None
        if not isinstance(alpha, int | float) or isinstance(alpha, bool):
            raise DataError(f"{source}: sweep[{index}] must hold a number 'alpha'")
        name = f"{Path(model).name} (alpha={alpha:g})"
        results.append(_parse_model(row, name, "method", source, f"sweep[{index}]",
                                    spreads(data, f"sweep/{index}")))
    return RunResults(directory.name, directory, tuple(results), {})


def _parse_model(summary: Any, name: str, role: str, source: Path, where: str,
                 spread: dict[str, Spread] | None = None) -> ModelResult:
    if not isinstance(summary, dict):
        raise DataError(f"{source}: {where} must be an object of metrics")
    muse = _parse_numbers(summary.get("muse"), MUSE_KEYS, source, f"{where}.muse")
    metrics = {}
    for key in METRIC_KEYS:
        if key not in summary and muse is None:
            raise DataError(f"{source}: {where} is missing {key!r}")
        metrics[key] = _optional_number(summary.get(key), source, f"{where}.{key}")
    train_seconds = _optional_number(summary.get("train_seconds"), source, f"{where}.train_seconds")
    samples = _parse_samples(summary.get("samples", []), source, f"{where}.samples")
    # memorisation and fluency: in the row (TOFU) or in its MUSE figures
    figures = summary.get("muse") if muse is not None else summary
    memorised = {key: _optional_number(figures.get(key), source, f"{where}.{key}")
                 for key in MEMORISATION_KEYS}
    fluency = figures.get("forget_answer_fluency")
    if fluency is not None:
        fluency = {**_parse_numbers(fluency, ("distinct_2", "repetition_3", "ngram_entropy"),
                                    source, f"{where}.forget_answer_fluency"),
                   **_optional_numbers(fluency, OPTIONAL_FLUENCY_KEYS, source,
                                       f"{where}.forget_answer_fluency")}
    return ModelResult(
        name, role, train_seconds=train_seconds, samples=samples, **metrics,
        exact_memorisation=memorised["forget_exact_memorisation"],
        extraction_strength=memorised["forget_extraction_strength"],
        fluency=fluency, muse=muse,
        mia=_parse_mia(summary.get("mia"), source, f"{where}.mia"),
        relearn=_parse_relearn(summary.get("relearn"), source, f"{where}.relearn"),
        inference=_inference(summary),
        quantize=_parse_quantize(summary.get("quantize"), source, f"{where}.quantize"),
        spread=spread or {},
    )


def _inference(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The inference settings a row records, itself or in its MIA block."""
    for block in (summary, summary.get("mia")):
        if isinstance(block, dict) and isinstance(block.get("inference"), dict):
            return block["inference"]
    return None


# measured by later versions: a result without them shows "—"
OPTIONAL_FLUENCY_KEYS = ("longest_repeat_run", "max_repeat_run", "perplexity",
                         "retain_answers_perplexity", "perplexity_ratio", "empty_answers")


def _optional_numbers(value: dict, keys: tuple[str, ...], source: Path,
                      where: str) -> dict[str, float | None]:
    return {key: _optional_number(value.get(key), source, f"{where}.{key}") for key in keys}


def _parse_numbers(value: Any, keys: tuple[str, ...], source: Path,
                   where: str) -> dict[str, float | None] | None:
    """An object's numbers at `keys` (each present, a number or null), or None for null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DataError(f"{source}: {where} must be an object")
    numbers = {}
    for key in keys:
        if key not in value:
            raise DataError(f"{source}: {where} is missing {key!r}")
        numbers[key] = _optional_number(value[key], source, f"{where}.{key}")
    return numbers


def _parse_mia(value: Any, source: Path, where: str) -> MiaResult | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("attacks"), list):
        raise DataError(f"{source}: {where} must be an object with a list 'attacks'")
    attacks = []
    for position, attack in enumerate(value["attacks"]):
        at = f"{where}.attacks[{position}]"
        if not isinstance(attack, dict) or not isinstance(attack.get("attack"), str):
            raise DataError(f"{source}: {at} must be an object naming its 'attack'")
        auc = _optional_number(attack.get("auc"), source, f"{at}.auc")
        if auc is None:
            raise DataError(f"{source}: {at}.auc must be a number")
        attacks.append(AttackAuc(
            attack["attack"], auc,
            _optional_number(attack.get("retain_auc"), source, f"{at}.retain_auc"),
            bool(attack.get("separates")), _text(attack.get("verdict", ""), source,
                                                 f"{at}.verdict")))
    return MiaResult(tuple(attacks), _text(value.get("conclusion", ""), source,
                                           f"{where}.conclusion"),
                     None if value.get("texts") is None else _text(value["texts"], source,
                                                                     f"{where}.texts"))


def _attack_figures(value: dict, source: Path, where: str) -> dict[str, Any]:
    """An attack summary's before / after / original / recovered prob and rouge (only the
    original may be null)."""
    parts: dict[str, Any] = {}
    for key in RELEARN_KEYS:
        if key not in value:
            raise DataError(f"{source}: {where} is missing {key!r}")
        parts[key] = _parse_numbers(value[key], ("prob", "rouge"), source, f"{where}.{key}")
        if parts[key] is None and key != "original":
            raise DataError(f"{source}: {where}.{key} must be an object of prob and rouge")
    return parts


def _parse_relearn(value: Any, source: Path, where: str) -> RelearnResult | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DataError(f"{source}: {where} must be an object")
    parts = _attack_figures(value, source, where)
    counts = {key: _optional_number(value.get(key), source, f"{where}.{key}")
              for key in ("trained_on", "held_out", "steps")}
    return RelearnResult(
        attack=_text(value.get("attack", ""), source, f"{where}.attack"),
        **{key: None if number is None else int(number) for key, number in counts.items()},
        **parts,
    )


def _parse_quantize(value: Any, source: Path, where: str) -> tuple[QuantizeResult, ...]:
    """{"8": quantize.json's summary, "4": ...} as results, in the order written."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise DataError(f"{source}: {where} must be an object of bit widths")
    results = []
    for bits, attack in value.items():
        at = f"{where}.{bits}"
        if not isinstance(attack, dict):
            raise DataError(f"{source}: {at} must be an object")
        parts = _attack_figures(attack, source, at)
        number = _optional_number(attack.get("bits", bits if str(bits).isdigit() else None),
                                  source, f"{at}.bits")
        if number is None:
            raise DataError(f"{source}: {at} names no bit width")
        results.append(QuantizeResult(_text(attack.get("attack", ""), source, f"{at}.attack"),
                                      int(number), **parts))
    return tuple(results)


def _text(value: Any, source: Path, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{source}: {where} must be a string")
    return value


def _parse_samples(samples: Any, source: Path, where: str) -> tuple[AnswerSample, ...]:
    if not isinstance(samples, list):
        raise DataError(f"{source}: {where} must be a list")
    parsed = []
    for position, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise DataError(f"{source}: {where}[{position}] must be an object")
        for key in SAMPLE_KEYS:
            if not isinstance(sample.get(key), str):
                raise DataError(f"{source}: {where}[{position}].{key} must be a string")
        parsed.append(AnswerSample(*(sample[key] for key in SAMPLE_KEYS)))
    return tuple(parsed)


def _optional_number(value: Any, source: Path, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DataError(f"{source}: {where} must be a number or null, got {value!r:.40}")
    return float(value)


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return data
