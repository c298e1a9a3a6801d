"""Regenerate uldkit's local lm-evaluation-harness task from TOFU's world facts.

    python scripts/make_harness_task.py ../shared/data/tofu/world_facts_perturbed.json

Each question becomes a four-way multiple choice: the true answer and TOFU's three perturbed
answers as distractors, in an order fixed by the question's index (so the file is the same
on every machine and the true answer is not always first).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/uldkit/eval/harness_tasks/world_facts.jsonl"


def main(source: str) -> None:
    rows = json.loads(Path(source).read_text(encoding="utf-8"))
    lines = []
    for index, row in enumerate(rows):
        choices = [row["answer"], *row["perturbed_answer"]]
        order = list(range(len(choices)))
        random.Random(index).shuffle(order)
        lines.append(json.dumps({
            "question": row["question"],
            "choices": [choices[i] for i in order],
            "label": order.index(0),
        }, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} questions to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
