"""The data loader lm-evaluation-harness calls for uldkit's `tofu_world_facts` task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROWS = Path(__file__).with_name("world_facts.jsonl")


def load_world_facts(**_: Any) -> Any:
    import datasets

    rows = [json.loads(line) for line in ROWS.read_text(encoding="utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
