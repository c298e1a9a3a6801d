"""`uldkit demo --seeds N`: the demo run with seeds s, s+1, ..., each in OUT/seed-<s>/.

A seed sets the fine-tuning of the target and retain models, each method's unlearning and
the relearning attack (the synthetic world itself stays the same). Each seed is a whole
demo run of its own and resumes on its own; OUT/results.json then holds every figure's mean
over the seeds, with its spread and the seeds' values (`uldkit.report.seeds`), and
OUT/report/ shows them (mean ± std in the tables, min-max error bars in the plot).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from uldkit.demo.run import run_demo
from uldkit.demo.settings import DemoConfig
from uldkit.io import atomic_write_json
from uldkit.report.seeds import run_over_seeds, seed_list
from uldkit.training.run_dir import RunDir, write_run_config


def run_demo_seeds(config: DemoConfig, seeds: int, log=print) -> dict[str, Any]:
    """The demo over `seeds` seeds from `config.seed` on; one seed is a plain demo run in
    `config.out` itself."""
    from uldkit.report.render import render_report

    chosen = seed_list(config.seed, seeds)
    if len(chosen) == 1:
        return run_demo(config, log)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, "demo", {**asdict(config), "seeds": seeds})
    started = time.perf_counter()
    results = run_over_seeds(
        lambda seed, directory: run_demo(replace(config, seed=seed, out=str(directory)), log),
        chosen, out, log)
    results["config"] = {**asdict(config), "seeds": seeds}
    results["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(RunDir(out).summary("results"), results)
    title = f"uldkit demo{' (MUSE)' if config.benchmark == 'muse' else ''}, {seeds} seeds"
    render_report([out], RunDir(out).report_dir, title=title)
    return results
