"""Progress counted in evaluation samples: done/total, samples per second, ETA (a live bar on
a terminal, plain lines when piped; see `uldkit.training.progress`)."""

from __future__ import annotations

from uldkit.training.progress import LoopProgress


class SampleProgress(LoopProgress):
    """One count over `total` samples; work inside a sample may advance it by fractions."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        super().__init__(total, description, "samples", enabled=enabled)
