"""`uldkit sweep`: methods over a small grid of settings, with seeds, and their frontier.

For each method, each learning rate x epochs of the grid (the method's demo-scale settings,
`uldkit.demo.settings.UNLEARN_SETTINGS`, fill in what the grid leaves out) and each seed,
the target is unlearned into OUT/<method>/<setting>/seed-<s>/ and evaluated with TOFU's
metrics against the retain model; ULD's alpha is an inference setting, so each alpha is an
evaluation of the same assistant (OUT/uld/<setting>/seed-<s>/eval/alpha_<a>/). Every run and
evaluation is skipped when it has finished, so a sweep resumes where it stopped.

Writes OUT/sweep.json (every point's mean figures, spreads and seeds' values),
OUT/results.json (the same points as one "method" each, so `uldkit report OUT` shows them
with error bars), OUT/frontier.md (the table) and OUT/frontier.png (the figure).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uldkit.data.sources import DataSource
from uldkit.demo.settings import unlearn_settings
from uldkit.demo.stages import LazyModel, given_model, recorded_setting, unlearn_stage
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from uldkit.report.frontier import SweepPoint, frontier_png, frontier_table, point_label
from uldkit.report.seeds import OVER_SEEDS, combine_seeds, seed_dir, seed_list, spreads
from uldkit.training.run_dir import RunDir, write_run_config

Log = Callable[[str], None]
FIGURE_KEYS = ("forget_quality", "model_utility", "forget_rouge", "forget_prob",
               "retain_prob", "retain_rouge", "forget_truth_ratio", "ks_statistic")


@dataclass
class SweepConfig:
    target: str
    retain: str
    out: str
    methods: list[str] = field(default_factory=lambda: ["uld", "grad_diff", "npo"])
    lr: list[float] | None = None  # None: each method's demo-scale learning rate
    epochs: list[int] | None = None
    alpha: list[float] | None = None  # ULD only; None: its trained alpha
    seeds: int = 1
    seed: int = 0
    data: str = "synthetic"
    people: int | None = None  # synthetic world: default, the target's
    forget: str = "forget10"
    max_new_tokens: int = 48


@dataclass(frozen=True)
class GridPoint:
    method: str
    lr: float | None
    epochs: int | None

    def settings(self, alpha: float | None = None) -> dict[str, Any]:
        settings: dict[str, Any] = {"lr": self.lr, "epochs": self.epochs}
        if self.method == "uld":
            settings["alpha"] = alpha
        return settings

    @property
    def directory(self) -> str:
        named = [f"{key}_{value:g}" for key, value in (("lr", self.lr), ("epochs", self.epochs))
                 if value is not None]
        return "-".join(named) or "default"


def grid(config: SweepConfig) -> list[GridPoint]:
    """The grid's points (ConfigError when it has none, or names an unknown method)."""
    from uldkit.unlearning.catalog import all_methods

    known = all_methods()
    for name in config.methods:
        if name not in known:
            raise ConfigError(f"unknown method '{name}'; known methods: {', '.join(known)}")
    for name, values in (("--lr", config.lr), ("--epochs", config.epochs),
                         ("--alpha", config.alpha)):
        if values is not None and not values:
            raise ConfigError(f"{name} was given no values: the grid has no points")
    points = [GridPoint(method, lr, epochs) for method, lr, epochs in itertools.product(
        config.methods, config.lr or [None], config.epochs or [None])]
    if not points:
        raise ConfigError("the grid has no points: give at least one method")
    return points


def run_sweep(config: SweepConfig, log: Log = print) -> dict[str, Any]:
    from uldkit.eval.tofu_eval import evaluate_tofu

    points = grid(config)
    seeds = seed_list(config.seed, config.seeds)
    target, retain = given_model(config.target, "target"), given_model(config.retain, "retain")
    people = config.people or recorded_setting(target, "people") or 40
    source = DataSource(config.data, people=people, seed=0)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, "sweep", asdict(config))

    def evaluate(name: str, model: Callable[[], Any], eval_dir: Path, retain_log: Any
                 ) -> tuple[Any, dict[str, Any]]:
        summary_file = RunDir(eval_dir).summary("eval")
        if summary_file.exists():
            from uldkit.eval.tofu_log import load_tofu_log

            return (load_tofu_log(RunDir(eval_dir).tofu_log),
                    json.loads(summary_file.read_text())["figures"])
        log(f"[sweep] evaluating {name}")
        tofu_log, summary = evaluate_tofu(
            model(), source, config.forget, retain_log=retain_log,
            max_new_tokens=config.max_new_tokens, out_dir=eval_dir, resume=True,
            model_name=name, show_progress=False)
        return tofu_log, summary.figures.to_dict()

    retain_log, retain_figures = evaluate("retain", LazyModel(retain),
                                          out / "reference" / "retain", None)
    _, target_figures = evaluate("target", LazyModel(target), out / "reference" / "target",
                                 retain_log)
    references = {"target": _pick(target_figures), "retain": _pick(retain_figures)}

    sweep_points: list[dict[str, Any]] = []
    for point in points:
        params, train = unlearn_settings(point.method, target.resolve())
        train.update({key: value for key, value in (("lr", point.lr),
                                                    ("epochs", point.epochs))
                      if value is not None})
        alphas: Sequence[float | None] = (config.alpha or [None]) if point.method == "uld" \
            else [None]
        per_alpha: dict[float | None, list[dict[str, Any]]] = {a: [] for a in alphas}
        for seed in seeds:
            run_dir = seed_dir(out / point.method / point.directory, seed)
            unlearn_stage(point.method, target, run_dir, log, people=people, data=config.data, forget=config.forget,
                          hyperparameters=params, train_overrides={**train, "seed": seed})
            model = LazyModel(run_dir)
            for alpha in alphas:
                eval_dir = run_dir / "eval" / ("default" if alpha is None else f"alpha_{alpha:g}")
                view = model if alpha is None else _alpha_view(model, alpha)
                _, figures = evaluate(f"{point.method} {point.directory} seed {seed}"
                                      + ("" if alpha is None else f" alpha {alpha:g}"),
                                      view, eval_dir, retain_log)
                per_alpha[alpha].append(_pick(figures))
        for alpha, figures in per_alpha.items():
            combined = combine_seeds(figures, seeds)
            sweep_points.append({"method": point.method, "settings": point.settings(alpha),
                                 "label": point_label(point.method, point.settings(alpha)),
                                 **combined})
    return write_sweep(out, config, sweep_points, references, seeds)


def _alpha_view(model: LazyModel, alpha: float) -> Callable[[], Any]:
    def view() -> Any:
        with_settings = getattr(model(), "with_settings", None)
        if with_settings is None:
            raise ConfigError("--alpha applies to ULD models only")
        return with_settings(alpha=alpha)
    return view


def _pick(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: figures.get(key) for key in FIGURE_KEYS}


def sweep_points(results: dict[str, Any]) -> list[SweepPoint]:
    """The points of a sweep.json."""
    return [SweepPoint(p["method"], p["settings"], p.get("forget_quality"),
                       p.get("model_utility"), spreads(p), len(p[OVER_SEEDS]["seeds"]))
            for p in results["points"]]


def write_sweep(out: Path, config: SweepConfig, points: list[dict[str, Any]],
                references: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    results = {"config": asdict(config), "seeds": seeds, "references": references,
               "points": points}
    run = RunDir(out)
    atomic_write_json(run.summary("sweep"), results)
    parsed = sweep_points(results)
    atomic_write_text(run.report("frontier_table"), frontier_table(parsed, references))
    atomic_write_bytes(run.report("frontier"), frontier_png(parsed, references))
    atomic_write_json(run.summary("results"), _as_report_results(results))
    return results


def _as_report_results(results: dict[str, Any]) -> dict[str, Any]:
    """The sweep in results.json's layout: one "method" per point, named by its label."""
    methods, figures = {}, {}
    for point in results["points"]:
        methods[point["label"]] = {key: point.get(key) for key in FIGURE_KEYS}
        for path, spread in point[OVER_SEEDS]["figures"].items():
            figures[f"methods/{point['label']}/{path}"] = spread
    return {"benchmark": "tofu", **results["references"], "methods": methods,
            "config": results["config"],
            OVER_SEEDS: {"seeds": results["seeds"], "figures": figures}}
