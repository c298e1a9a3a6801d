"""Regenerate the README's quality table from several seeds of the default demo.

One command:

    PYTHONPATH=src python scripts/readme_figures.py                  # 3 seeds, runs/readme-figures
    PYTHONPATH=src python scripts/readme_figures.py --target T --retain R   # reuse two models

runs `uldkit demo --seeds N` (each seed resumes on its own in OUT/seed-<s>/), writes the
figures the README shows, with their spreads and every seed's value, to
docs/readme_figures.json, rewrites docs/demo_tradeoff.png (the means with min-max error
bars) and the README's table between the markers

    <!-- readme_figures.py: begin ... -->  ...  <!-- readme_figures.py: end -->

which say which script wrote it, when, and from which results file. It then runs the
frontier sweeps (SWEEPS: NPO and GradDiff over learning rates, ULD over alpha, the same
seeds, on the first seed's models; `uldkit sweep`), draws docs/sweep_frontier.png and
rewrites the README's sweep table between `<!-- readme_figures.py sweep: begin ... -->` and
`<!-- readme_figures.py sweep: end -->` (`--no-sweep` keeps the table it has). Last, the MUSE
demo over the same seeds (OUT/muse) gives the README's MUSE table between
`<!-- readme_figures.py muse: begin ... -->` and its end marker (`--no-muse` keeps it;
`--only-muse` runs only that and keeps the rest). `--only-tofu-real` runs the real TOFU
demo's seeds (the CPU subset, about an hour for three seeds on 2 cores) into the README's
tofu-real block; the full run does not include it. `--table-only` rewrites
the README from the results file without running anything. tests/test_readme_figures.py
checks that every number in that table appears in the committed results file.

With `--target`/`--retain` (existing models, e.g. a previous demo's), the seeds vary the
unlearning and the relearning attack only; without them, each seed also fine-tunes its own
target and retain models (what a user's `uldkit demo --seed S` does).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "readme_figures.json"
README = ROOT / "README.md"
PLOT = ROOT / "docs" / "demo_tradeoff.png"
FRONTIER_PLOT = ROOT / "docs" / "sweep_frontier.png"
SCRIPT = "scripts/readme_figures.py"
BLOCKS = ("demo", "sweep", "muse", "tofu-real")  # the README's blocks, each between its own markers


def markers(kind: str) -> tuple[str, str]:
    tag = "readme_figures.py" if kind == "demo" else f"readme_figures.py {kind}"
    return f"<!-- {tag}: begin", f"<!-- {tag}: end -->"


# The frontier sweeps on the seed-first target: (sweep directory, methods, grid)
SWEEPS = (
    ("sweep-npo-gd", ["npo", "grad_diff"], {"lr": [5e-4, 1e-3, 3e-3]}),
    ("sweep-uld", ["uld"], {"alpha": [0.5, 1.0, 1.5, 2.0]}),
)

# (column title, path in a model's figures, format); "±" cells show mean ± sample std
COLUMNS = (
    ("forget quality ↑", "forget_quality", "{:.1e}"),
    ("model utility ↑", "model_utility", "{:.3f}"),
    ("forget ROUGE-L ↓", "forget_rouge", "{:.3f}"),
    ("forget Prob. ↓", "forget_prob", "{:.3f}"),
    ("extraction strength ↓", "forget_extraction_strength", "{:.2f}"),
    ("relearned (held-out Prob.) ↓", "relearn/recovered/prob", "{:.1%}"),
    ("4-bit: forget Prob. recovered ↓", "quantize/4/recovered/prob", "{:.1%}"),
    ("forget answers' perplexity ×retain's ↓", "forget_answer_fluency/perplexity_ratio",
     "{:.1f}"),
    ("longest repeat ↓", "forget_answer_fluency/max_repeat_run", "{:.1f}"),
)
RANGE_COLUMNS = ("forget_quality", "model_utility")  # also shown as min–max

# The MUSE demo's table (`uldkit demo --benchmark muse`, the same seeds): MUSE's six-way
# figures of each model (path under its "muse" block), and issue 17's aims on them.
MUSE_COLUMNS = (
    ("VerbMem on D_f ↓", "verbmem_forget", "{:.3f}"),
    ("KnowMem on D_f ↓", "knowmem_forget", "{:.3f}"),
    ("KnowMem on D_r ↑", "knowmem_retain", "{:.3f}"),
    ("utility preserved ↑", "utility_preserved", "{:.1%}"),
    ("PrivLeak (→ 0)", "privleak", "{:.3f}"),
)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from uldkit.demo.seeds import run_demo_seeds
    from uldkit.demo.settings import DemoConfig

    config = DemoConfig(out=str(args.out), seed=args.seed, target=args.target,
                        retain=args.retain)
    combined = run_demo_seeds(config, args.seeds, log=print)
    return figures_file(combined, args)


# The real TOFU demo's table (`uldkit demo --benchmark tofu-real`, the CPU subset, the same
# seeds, no relearning or quantisation attack: 15-25 minutes a seed).
TOFU_REAL_COLUMNS = (
    ("forget quality ↑", "forget_quality", "{:.1e}"),
    ("model utility ↑", "model_utility", "{:.3f}"),
    ("forget ROUGE-L ↓", "forget_rouge", "{:.3f}"),
    ("forget Prob. ↓", "forget_prob", "{:.3f}"),
    ("forget truth ratio", "forget_truth_ratio", "{:.3f}"),
)


def run_tofu_real(args: argparse.Namespace) -> dict[str, Any]:
    """The tofu-real demo over the same seeds (each fine-tuning its own models), in
    OUT/tofu-real; needs TOFU's files (ULDKIT_TOFU_DIR)."""
    from uldkit.demo.seeds import run_demo_seeds
    from uldkit.demo.settings import DemoConfig
    from uldkit.report.seeds import seeds_of

    config = DemoConfig(out=str(Path(args.out) / "tofu-real"), benchmark="tofu-real",
                        seed=args.seed, relearn=False, quantize=False)
    combined = run_demo_seeds(config, args.seeds, log=print)
    return {"seeds": seeds_of(combined),
            "rows": _seed_rows(combined, TOFU_REAL_COLUMNS, mia_of=config.out)}


def _seed_rows(combined: dict[str, Any], columns: tuple, under: str = "",
               mia_of: str | Path | None = None) -> dict[str, Any]:
    """Each model's spreads over the seeds for `columns` (paths below `under`); with
    `mia_of` (the seeds' parent directory), also each seed's MIA verdict counts."""
    from uldkit.report.seeds import seed_dir, seeds_of, spreads
    from uldkit.training.run_dir import RunDir

    seed_results = [] if mia_of is None else [
        json.loads(RunDir(seed_dir(mia_of, seed)).summary("results").read_text())
        for seed in seeds_of(combined)]
    rows = {}
    for name in ["target", "retain", *combined["methods"]]:
        prefix = name if name in ("target", "retain") else f"methods/{name}"
        found = spreads(combined, f"{prefix}/{under}" if under else prefix)
        rows[name] = {key: found[key].to_dict() for _, key, _ in columns if key in found}
        if mia_of is not None:
            rows[name]["mia_separating"] = [_separating(results, name)
                                            for results in seed_results]
    return rows


def run_muse(args: argparse.Namespace) -> dict[str, Any]:
    """The MUSE demo over the same seeds (each fine-tuning its own models), in OUT/muse."""
    from uldkit.demo.seeds import run_demo_seeds
    from uldkit.demo.settings import DemoConfig
    from uldkit.report.seeds import seeds_of

    config = DemoConfig(out=str(Path(args.out) / "muse"), benchmark="muse", seed=args.seed)
    combined = run_demo_seeds(config, args.seeds, log=print)
    return {"seeds": seeds_of(combined), "rows": _seed_rows(combined, MUSE_COLUMNS, "muse")}


def figures_file(combined: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What the README's table shows, per model and figure: mean, std, min, max and the
    seeds' values; and the MIA verdict counts of each seed."""
    from uldkit.report.seeds import SPREAD_NOTE, seeds_of

    seeds = seeds_of(combined)
    rows = _seed_rows(combined, (*COLUMNS, ("train time", "train_seconds", "{:.0f}")),
                      mia_of=args.out)
    for row in rows.values():
        row.setdefault("train_seconds", None)
    return {
        "script": SCRIPT,
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([SCRIPT, *sys.argv[1:]]),
        "demo": {key: value for key, value in combined["config"].items() if key != "out"},
        "models_reused": args.target is not None,
        "seeds": seeds,
        "spread": SPREAD_NOTE,
        "rows": rows,
    }


def _separating(results: dict[str, Any], name: str) -> list[int]:
    row = results[name] if name in ("target", "retain") else results["methods"][name]
    mia = row.get("mia") or {}
    return [len(mia.get("separating") or []), len(mia.get("attacks") or [])]


def markdown_table(figures: dict[str, Any]) -> str:
    """The README's table (Markdown) from a results file."""
    seeds = figures["seeds"]
    head = ["model", *(title for title, _, _ in COLUMNS), "MIA attacks separating ↓",
            "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in figures["rows"].items():
        cells = [f"**{name}**" if name == "uld" else name]
        for _, key, pattern in COLUMNS:
            cells.append(_cell(row.get(key), pattern, key in RANGE_COLUMNS, name, key))
        cells.append(", ".join(f"{s}/{n}" for s, n in row["mia_separating"]))
        seconds = row.get("train_seconds")
        cells.append("" if seconds is None else f"{seconds['mean']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    reuse = ("the same target and retain models (seed 0), seeds varying the unlearning and the "
             "relearning attack" if figures["models_reused"]
             else "each seed fine-tuning its own target and retain models")
    lines += ["", f"Mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
              f"({reuse}); below forget quality and model utility, the range (min–max) of "
              "the seeds' values. 4-bit: the share of the forget Prob. the unlearning took "
              "away that comes back when the model's linear weights are rounded to 4 bits "
              "(for ULD, the target's and the assistant's). Perplexity: of the generated "
              "forget answers under the retain model, over that of the retain model's own "
              "answers (issue 17's aim: ≤ 1.5). Longest repeat: the most back-to-back "
              "repeats of one phrase in any forget answer. MIA: attacks still separating "
              "forget from held-out people, per seed. A figure without a spread was the same "
              "in every seed. Every seed's value: `docs/readme_figures.json`."]
    return "\n".join(lines) + "\n"


def _cell(spread: dict[str, Any] | None, pattern: str, with_range: bool, name: str,
          key: str) -> str:
    if spread is None:
        return "the reference" if name == "retain" and key == "forget_quality" else ""
    text = pattern.format(spread["mean"])
    if spread["min"] == spread["max"]:  # every seed gave the same value
        return text
    if spread.get("std") is not None:
        text += f" ± {pattern.format(spread['std'])}"
    if with_range:
        text += f"<br>({pattern.format(spread['min'])}–{pattern.format(spread['max'])})"
    return text


def block(figures: dict[str, Any], kind: str = "demo") -> str:
    """A README block: markers naming the script, the time and the results file."""
    begin, end = markers(kind)
    table = {"demo": markdown_table, "sweep": sweep_table, "muse": muse_table,
             "tofu-real": tofu_real_table}[kind](figures)
    return (f"{begin}: written by {SCRIPT} on {figures['written']} from "
            f"docs/readme_figures.json; edit by rerunning the script -->\n{table}{end}")


def _block_pattern(kind: str) -> re.Pattern:
    begin, end = markers(kind)
    return re.compile(re.escape(begin) + r"[: ].*?" + re.escape(end), re.DOTALL)


def rewrite_readme(readme: Path, figures: dict[str, Any]) -> None:
    text = readme.read_text(encoding="utf-8")
    for kind in blocks_of(figures):
        pattern = _block_pattern(kind)
        if not pattern.search(text):
            raise SystemExit(f"{readme}: no '{markers(kind)[0]} ... {markers(kind)[1]}' block")
        text = pattern.sub(lambda _, kind=kind: block(figures, kind), text, count=1)
    readme.write_text(text, encoding="utf-8")


def blocks_of(figures: dict[str, Any]) -> list[str]:
    """The README blocks a results file has figures for."""
    return ["demo", *(kind for kind in ("sweep", "muse", "tofu-real") if figures.get(kind))]


def readme_block(readme: Path, kind: str = "demo") -> str | None:
    """A table block now in the README (markers included), or None."""
    match = _block_pattern(kind).search(readme.read_text(encoding="utf-8"))
    return None if match is None else match.group(0)


# --- the frontier sweeps ----------------------------------------------------------------------
def run_sweeps(args: argparse.Namespace) -> dict[str, Any]:
    """Each sweep of SWEEPS with the demo's seeds on the seed-first target and retain
    models; their points and the two reference models, for the README's sweep table."""
    from uldkit.demo.sweep import SweepConfig, run_sweep

    models = Path(args.sweep_models or Path(args.out) / f"seed-{args.seed}")
    points, references = [], {}
    for directory, methods, grid in SWEEPS:
        results = run_sweep(SweepConfig(
            target=str(models / "target"), retain=str(models / "retain"),
            out=str(Path(args.out) / directory), methods=methods, seeds=args.seeds,
            seed=args.seed, **grid), log=print)
        points += results["points"]
        references = results["references"]
    return {"points": [{**{key: point[key] for key in ("method", "settings", "label",
                                                       "forget_quality", "model_utility")},
                        "over_seeds": {**point["over_seeds"], "figures": {
                            key: point["over_seeds"]["figures"][key]
                            for key in ("forget_quality", "model_utility")}}}
                       for point in points],
            "references": {name: {key: figures[key] for key in ("forget_quality",
                                                                 "model_utility")}
                           for name, figures in references.items()}}


def sweep_points(figures: dict[str, Any]) -> list:
    from uldkit.report.frontier import SweepPoint
    from uldkit.report.seeds import spreads

    return [SweepPoint(p["method"], p["settings"], p["forget_quality"], p["model_utility"],
                       {key: spread for key, spread in spreads(p).items()
                        if key in ("forget_quality", "model_utility")},
                       len(p["over_seeds"]["seeds"]))
            for p in figures["sweep"]["points"]]


def sweep_table(figures: dict[str, Any]) -> str:
    from uldkit.report.frontier import by_method, frontier

    points = sweep_points(figures)
    lines = ["| method | setting | forget quality ↑ | model utility ↑ | on its frontier |",
             "|---|---|---|---|---|"]
    for name, reference in figures["sweep"]["references"].items():
        quality = reference["forget_quality"]
        lines.append(f"| {name} | | {'the reference' if quality is None else f'{quality:.1e}'}"
                     f" | {reference['model_utility']:.3f} | |")
    for method, group in by_method(points).items():
        best = {id(point) for point in frontier(group)}
        for point in group:
            setting = " ".join(f"{'α' if key == 'alpha' else key}={value:g}"
                               for key, value in point.settings.items() if value is not None)
            lines.append(f"| {method} | {setting or 'demo setting'} | "
                         f"{_sweep_cell(point, 'forget_quality', '{:.1e}')} | "
                         f"{_sweep_cell(point, 'model_utility', '{:.3f}')} | "
                         f"{'yes' if id(point) in best else ''} |")
    lines += ["", f"Mean ± sample standard deviation over unlearning seeds "
              f"{', '.join(map(str, figures['seeds']))} (min–max below), on the seed-"
              f"{figures['seeds'][0]} target; other settings as the demo's. Every seed's "
              "value: `docs/readme_figures.json`."]
    return "\n".join(lines) + "\n"


def _sweep_cell(point: Any, key: str, pattern: str) -> str:
    spread = point.spread.get(key)
    value = getattr(point, key)
    if spread is None or spread.low == spread.high:
        return pattern.format(value)
    return (f"{pattern.format(spread.mean)} ± {pattern.format(spread.std)}<br>"
            f"({pattern.format(spread.low)}–{pattern.format(spread.high)})")


def muse_table(figures: dict[str, Any]) -> str:
    """The MUSE demo's table: each model's figures as mean ± sample std over the seeds."""
    muse = figures["muse"]
    head = ["model", *(title for title, _, _ in MUSE_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in muse["rows"].items():
        cells = [f"**{name}**" if name == "uld" else name]
        cells += [_cell(row.get(key), pattern, False, name, key)
                  for _, key, pattern in MUSE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample standard deviation over seeds "
              f"{', '.join(map(str, muse['seeds']))} of `uldkit demo --benchmark muse` (each "
              "seed fine-tuning its own target and retain models). Utility preserved: KnowMem "
              "on D_r as a share of the target's. Every seed's value: "
              "`docs/readme_figures.json`."]
    return "\n".join(lines) + "\n"


def tofu_real_table(figures: dict[str, Any]) -> str:
    """The real TOFU demo's table: mean ± sample std (min–max for FQ and MU) over seeds."""
    block = figures["tofu-real"]
    head = ["model", *(title for title, _, _ in TOFU_REAL_COLUMNS), "MIA attacks separating ↓"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in block["rows"].items():
        cells = [f"**{name}**" if name == "uld" else name]
        cells += [_cell(row.get(key), pattern, key in RANGE_COLUMNS, name, key)
                  for _, key, pattern in TOFU_REAL_COLUMNS]
        cells.append(", ".join(f"{s}/{n}" for s, n in row["mia_separating"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample standard deviation over seeds "
              f"{', '.join(map(str, block['seeds']))} of `uldkit demo --benchmark tofu-real "
              "--no-relearn --no-quantize` (the CPU subset; each seed fine-tuning its own "
              "target and retain models); below forget quality and model utility, the range "
              "(min–max). MIA: attacks still separating forget from held-out authors, per "
              "seed. Every seed's value: `docs/readme_figures.json`."]
    return "\n".join(lines) + "\n"


NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]\d+)?%?")


def unbacked_numbers(table_block: str, figures: dict[str, Any]) -> list[str]:
    """Numbers in the block's table rows that no value of the results file, formatted as
    the table formats figures, gives: a figure edited by hand."""
    shown = set()
    patterns = ({pattern for _, _, pattern in (*COLUMNS, *MUSE_COLUMNS, *TOFU_REAL_COLUMNS)}
                | {"{:.0f}", "{}", "{:g}"})
    for value in _numbers({"rows": figures["rows"], "sweep": figures.get("sweep"),
                           "muse": figures.get("muse"), "tofu-real": figures.get("tofu-real")}):
        # the table's signs are not matched by NUMBER: a negative figure shows as its size
        shown |= {pattern.format(abs(value)) for pattern in patterns}
    rows = [line for line in table_block.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]
    return [number for line in rows for number in NUMBER.findall(line) if number not in shown]


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--out", type=Path, default=Path("runs/readme-figures"))
    parser.add_argument("--target", help="an existing target model (with --retain)")
    parser.add_argument("--retain", help="an existing retain model (with --target)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the frontier sweeps (keep the README's sweep table)")
    parser.add_argument("--sweep-models", help="a directory holding the target/ and retain/ "
                        "models the sweeps unlearn (default: OUT/seed-<first>)")
    parser.add_argument("--no-muse", action="store_true",
                        help="skip the MUSE demo's seeds (keep the README's MUSE table)")
    parser.add_argument("--only-muse", action="store_true",
                        help="run only the MUSE demo's seeds; keep the other tables' figures")
    parser.add_argument("--only-tofu-real", action="store_true",
                        help="run only the tofu-real demo's seeds (needs ULDKIT_TOFU_DIR); "
                        "keep the other tables' figures")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the README from --results without running the demo")
    args = parser.parse_args()
    if args.seeds < 3 and not args.table_only:
        parser.error("the README's figures come from at least 3 seeds")
    if args.table_only:
        figures = json.loads(args.results.read_text(encoding="utf-8"))
    elif args.only_muse or args.only_tofu_real:
        from uldkit.io import atomic_write_json

        figures = json.loads(args.results.read_text(encoding="utf-8"))
        kind, run = ("muse", run_muse) if args.only_muse else ("tofu-real", run_tofu_real)
        figures[kind] = run(args)
        figures[kind]["command"] = "python " + " ".join([SCRIPT, *sys.argv[1:]])
        figures["written"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        atomic_write_json(args.results, figures)
    else:
        from uldkit.io import atomic_write_json

        figures = run_demo(args)
        if not args.no_sweep:
            from uldkit.report.frontier import frontier_png

            figures["sweep"] = run_sweeps(args)
            references = figures["sweep"]["references"]
            FRONTIER_PLOT.write_bytes(frontier_png(sweep_points(figures), references))
        elif args.results.is_file():
            figures["sweep"] = json.loads(args.results.read_text()).get("sweep")
        if not args.no_muse:
            figures["muse"] = run_muse(args)
        elif args.results.is_file():
            figures["muse"] = json.loads(args.results.read_text()).get("muse")
        if args.results.is_file():  # only --only-tofu-real runs it (an hour): kept
            figures["tofu-real"] = json.loads(args.results.read_text()).get("tofu-real")
        atomic_write_json(args.results, figures)
        # the README's plot: the seeds' means with min-max error bars
        PLOT.write_bytes((args.out / "report" / "tradeoff.png").read_bytes())
    rewrite_readme(args.readme, figures)
    print(markdown_table(figures))
    if figures.get("sweep"):
        print(sweep_table(figures))
    if figures.get("muse"):
        print(muse_table(figures))
    if figures.get("tofu-real"):
        print(tofu_real_table(figures))
    print(f"wrote {args.results} and the table in {args.readme}")


if __name__ == "__main__":
    main()
