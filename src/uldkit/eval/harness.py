"""lm-evaluation-harness on any model uldkit loads: plain models and ULD runs alike.

lm-eval's `HFLM` takes a transformers model object, so whatever `uldkit.load` returns (a
plain causal LM, or a `ULDForCausalLM` whose forward gives the logit-difference scores) is
evaluated by lm-eval's own code, and its own results JSON is written. uldkit ships one local
task, `tofu_world_facts` (TOFU's world facts as four-way multiple choice, no download); any
task name lm-eval knows, or a path to a task YAML, works too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError, import_optional

LOCAL_TASKS = Path(__file__).with_name("harness_tasks")


def import_lm_eval() -> Any:
    return import_optional("lm_eval", "harness", "uldkit eval harness")


def _task_name_in(yaml_path: Path) -> str:
    # lm-eval's YAML uses custom tags (!function), so a plain YAML parser cannot read it;
    # the task's name is one top-level line.
    match = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", yaml_path.read_text(encoding="utf-8"),
                      flags=re.MULTILINE)
    if match is None:
        raise ConfigError(f"{yaml_path}: no top-level 'task:' name")
    return match.group(1)


def resolve_tasks(specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(task names, folders to include) for task names and task YAML paths."""
    names: list[str] = []
    include = [str(LOCAL_TASKS)]
    for spec in specs:
        path = Path(spec).expanduser()
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise ConfigError(f"no task file {spec}")
            names.append(_task_name_in(path))
            include.append(str(path.resolve().parent))
        else:
            names.append(spec)
    if not names:
        raise ConfigError("no lm-eval task given (--tasks NAME[,NAME...] or a task YAML path)")
    return names, include


def run_harness(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run lm-eval's `simple_evaluate` on a loaded model object; returns lm-eval's results."""
    import_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names, include = resolve_tasks(tasks)
    manager = TaskManager(include_path=include)
    known = set(manager.all_tasks)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"unknown lm-eval task '{unknown[0]}'; `lm-eval ls tasks` lists lm-eval's tasks, "
            f"uldkit adds {', '.join(local_task_names())}, and a path to a task YAML also works")
    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return simple_evaluate(
        model=harness_model, tasks=names, task_manager=manager, limit=limit,
        num_fewshot=num_fewshot, log_samples=False, random_seed=seed, numpy_random_seed=seed,
        torch_random_seed=seed, fewshot_random_seed=seed,
    )


def local_task_names() -> list[str]:
    return sorted(_task_name_in(path) for path in LOCAL_TASKS.glob("*.yaml"))


def results_json(results: dict[str, Any]) -> str:
    """lm-eval's results as lm-eval itself serialises them."""
    import json

    from lm_eval.utils import handle_non_serializable

    return json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
