"""Progress of a long loop (training steps, evaluation samples) that reads well wherever the
output goes: on a terminal, one live bar that never wraps; piped to a file or a CI log, a
plain line every few seconds or every tenth of the way, with the rate and the time left."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID
from rich.text import Text

PLAIN_EVERY_SECONDS = 10.0
PLAIN_EVERY_FRACTION = 0.1


class LoopProgress:
    """Progress over `total` units (steps, samples); work may advance it by fractions.

    `note` is a short live figure shown beside the count (e.g. the current loss)."""

    def __init__(self, total: float, description: str, unit: str, *, enabled: bool = True,
                 completed: float = 0.0, console: Console | None = None,
                 every_seconds: float = PLAIN_EVERY_SECONDS,
                 every_fraction: float = PLAIN_EVERY_FRACTION,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.completed, self.note = completed, ""
        self.enabled = enabled
        self._console = console or Console()
        self._plain = not self._console.is_terminal
        self._every_seconds, self._every_fraction = every_seconds, every_fraction
        self._clock = clock
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> LoopProgress:
        self._started = self._last_line = self._clock()
        self._start_count = self._last_count = self.completed
        if self.enabled and not self._plain:
            self._progress = _live_bar(self._console, self.unit)
            self._task = self._progress.add_task(self.description, total=self.total,
                                                 completed=self.completed, note="")
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.enabled and self._last_count != self.completed:
            self._print_line()

    def describe(self, description: str) -> None:
        self.description = description
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, amount: float = 1.0, note: str | None = None) -> None:
        self.completed += amount
        if note is not None:
            self.note = note
        if self._progress is not None:
            self._progress.update(self._task, advance=amount, note=self.note)
        elif self.enabled and self._line_due():
            self._print_line()

    def line(self) -> str:
        """The plain progress line for now: count, share, note, rate, elapsed and ETA."""
        elapsed = self._clock() - self._started
        done = self.completed - self._start_count
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        share = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description}: {self.completed:.0f}/{self.total:.0f} {self.unit}{share}"]
        if self.note:
            parts.append(self.note)
        parts.append(f"{_rate(rate)} {self.unit}/s" if rate else f"- {self.unit}/s")
        parts.append(f"{_clock_time(elapsed)} elapsed")
        left = self.total - self.completed
        if left > 0:
            parts.append(f"eta {_clock_time(left / rate)}" if rate else "eta -")
        return ", ".join(parts)

    def _line_due(self) -> bool:
        if self.completed >= self.total:
            return True
        step = self._every_fraction * self.total
        crossed = step > 0 and int(self.completed / step) > int(self._last_count / step)
        return crossed or self._clock() - self._last_line >= self._every_seconds

    def _print_line(self) -> None:
        self._console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._last_line, self._last_count = self._clock(), self.completed


class _OneLine(ProgressColumn):
    """Description, bar and figures as one line cut to the terminal's width: the bar gives way
    first, then the description, so the line never wraps onto a second one."""

    def __init__(self, console: Console, unit: str) -> None:
        super().__init__()
        self.console, self.unit = console, unit

    def render(self, task) -> Text:
        width = self.console.width - 1
        speed = task.finished_speed or task.speed
        left = task.time_remaining
        figures = " ".join(part for part in (
            f"{task.completed:.0f}/{task.total:.0f}", task.fields.get("note", ""),
            f"{_rate(speed)} {self.unit}/s" if speed else "",
            _clock_time(task.elapsed or 0.0),
            f"eta {_clock_time(left)}" if left is not None else "eta -") if part)
        room = width - len(figures) - 2
        bar_width = min(30, max(5, room - len(task.description) - 1))
        description = _cut(task.description, max(room - bar_width - 1, 0))
        done = round(bar_width * task.completed / task.total) if task.total else 0
        line = Text()
        line.append(description, style="bold")
        line.append(" " if description else "")
        line.append("━" * done, style="bar.complete")
        line.append("━" * (bar_width - done), style="bar.back")
        line.append(" " + figures)
        line.truncate(width, overflow="ellipsis")
        return line


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else (text[:width - 1] + "…" if width > 1 else "")


def _live_bar(console: Console, unit: str) -> Progress:
    return Progress(_OneLine(console, unit), console=console, transient=False)


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}"


def _clock_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
