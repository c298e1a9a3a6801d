"""Generate for many requests at once: one worker thread batches what arrives together.

Requests queue up; the worker waits up to `batch_wait_ms` after the oldest one arrived for
others with the same model and α/τ (up to `max_batch`), then decodes them together with one
KV cache, one token per step. Sampling settings, seeds, stop strings and token limits are
per row, so any requests for the same model view can share a batch. Every row's text is
handed out as it is produced (for streaming) through thread-safe event delivery; a row whose
scores turn non-finite fails alone. The asyncio event loop never runs model code.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field

import torch

from uldkit.models.generation import GenerationSettings, choose_next_tokens
from uldkit.models.lm import LanguageModel
from uldkit.models.stops import model_stop_ids
from uldkit.serve.errors import ApiError
from uldkit.serve.text import StopText

log = logging.getLogger("uldkit.serve")


@dataclass(frozen=True)
class Started:
    """The first token was chosen: the request will produce a response."""


@dataclass(frozen=True)
class Piece:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Started | Piece | Finished | Failed


@dataclass(eq=False)
class Job:
    lm: LanguageModel
    group: Hashable  # jobs with equal groups may share a batch (same model view)
    prompt_ids: list[int]
    settings: GenerationSettings
    stops: tuple[str, ...] = ()
    strip: bool = False  # chat: no whitespace around the answer
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _events: asyncio.Queue[Event] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def emit(self, event: Event) -> None:
        if self._loop is None or self._events is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            self.cancelled.set()

    async def events(self) -> AsyncIterator[Event]:
        """Events until Finished or Failed (inclusive)."""
        assert self._events is not None
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished | Failed):
                return

    def cancel(self) -> None:
        self.cancelled.set()


class BatchEngine:
    def __init__(self, max_batch: int = 16, batch_wait_ms: float = 5, max_queue: int = 256):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.batch_wait = max(0.0, batch_wait_ms) / 1000
        self.max_queue = max_queue
        self.batches_run = 0
        self.largest_batch = 0
        self.rows_cancelled = 0  # jobs dropped because their client went away
        self.tokens_generated = 0
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0  # submitted jobs not yet finished
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: Job) -> Job:
        """Queue a job; call from the event loop. 503 when too many requests are waiting."""
        job._loop = asyncio.get_running_loop()
        job._events = asyncio.Queue()
        with self._lock:
            if self._closed:
                raise ApiError(503, "the server is shutting down", kind="server_error",
                               code="shutting_down")
            if self._waiting >= self.max_queue:
                raise ApiError(503, f"the server is busy ({self._waiting} requests waiting); "
                               "retry later", kind="server_error", code="server_busy")
            self._waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="uldkit-generate",
                                                daemon=True)
                self._thread.start()
        self._inbox.put(job)
        return job

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued work, then stop the worker."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._inbox.put(None)
            thread.join(timeout)

    # The worker thread.
    def _work(self) -> None:
        pending: deque[Job] = deque()
        stopping = False
        while not (stopping and not pending):
            if not pending:
                job = self._inbox.get()
                if job is None:
                    stopping = True
                    continue
                pending.append(job)
            stopping = self._gather(pending) or stopping
            batch = self._take_batch(pending)
            try:
                self._run(batch)
            finally:
                with self._lock:
                    self._waiting -= len(batch)

    def _gather(self, pending: deque[Job]) -> bool:
        """Move arrivals into `pending`, waiting until the oldest job has waited
        `batch_wait` or its batch is full. True when the shutdown marker arrived."""
        deadline = pending[0].arrived + self.batch_wait
        while True:
            full = sum(job.group == pending[0].group for job in pending) >= self.max_batch
            timeout = deadline - time.monotonic()
            try:
                job = self._inbox.get(timeout=timeout) if timeout > 0 and not full \
                    else self._inbox.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            pending.append(job)

    def _take_batch(self, pending: deque[Job]) -> list[Job]:
        group = pending[0].group
        batch = [job for job in pending if job.group == group][:self.max_batch]
        for job in batch:
            pending.remove(job)
        return batch

    def _run(self, jobs: list[Job]) -> None:
        live = [job for job in jobs if not job.cancelled.is_set()]
        self.rows_cancelled += len(jobs) - len(live)
        if not live:
            return
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(live))
        try:
            with torch.inference_mode():
                _decode_batch(live, self)
        except Exception:
            log.exception("generation failed for a batch of %d requests", len(live))
            for job in live:
                job.emit(Failed(ApiError(500, "generation failed inside the server",
                                         kind="server_error", code="internal_error")))


class _Row:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.text = StopText(job.lm.tokenizer, job.stops, job.strip)
        self.done = False
        self.generator: torch.Generator | None = None
        if job.settings.do_sample:
            seed = job.settings.seed
            self.generator = torch.Generator(device=job.lm.device).manual_seed(
                secrets.randbits(63) if seed is None else seed
            )

    def finish(self, event: Event) -> None:
        self.done = True
        self.job.emit(event)


def _decode_batch(jobs: list[Job], engine: BatchEngine) -> None:
    lm = jobs[0].lm
    tokenizer = lm.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stop_ids = model_stop_ids(lm)
    width = max(len(job.prompt_ids) for job in jobs)
    input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for row, job in enumerate(jobs):
        input_ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
        attention_mask[row, width - len(job.prompt_ids):] = 1
    decoding = lm.start_decoding(input_ids.to(lm.device), attention_mask.to(lm.device))

    rows = [_Row(job) for job in jobs]
    longest = max(job.settings.max_new_tokens for job in jobs)
    for step in range(longest):
        scores = decoding.scores
        usable = (torch.isfinite(scores).any(-1) & ~torch.isnan(scores).any(-1)).tolist()
        greedy = scores.argmax(-1).tolist()
        next_tokens = [pad_id] * len(rows)
        for index, row in enumerate(rows):
            if row.done:
                continue
            if row.job.cancelled.is_set():
                row.done = True
                engine.rows_cancelled += 1
                continue
            if not usable[index]:
                row.finish(Failed(ApiError(
                    500, "the model produced non-finite (NaN) scores during generation",
                    kind="server_error", code="non_finite_scores")))
                continue
            try:
                token = _choose(scores, index, row, greedy[index])
            except Exception:  # one row's sampling must never take its neighbours down
                log.exception("sampling failed for one request")
                row.finish(Failed(ApiError(500, "sampling failed inside the server",
                                           kind="server_error", code="sampling_failed")))
                continue
            engine.tokens_generated += 1
            if step == 0:
                row.job.emit(Started())
            if token in stop_ids:
                _end(row, "stop")
                continue
            next_tokens[index] = token
            piece = row.text.push(token)
            if piece:
                row.job.emit(Piece(piece))
            if row.text.stopped:
                row.finish(Finished("stop", len(row.text.ids)))
            elif len(row.text.ids) >= row.job.settings.max_new_tokens:
                _end(row, "length")
        if all(row.done for row in rows):
            return
        decoding.advance(torch.tensor(next_tokens, device=lm.device))


def _choose(scores: torch.Tensor, index: int, row: _Row, greedy_token: int) -> int:
    if not row.job.settings.do_sample:
        return greedy_token
    return int(choose_next_tokens(scores[index:index + 1], row.job.settings, row.generator)[0])


def _end(row: _Row, reason: str) -> None:
    tail = row.text.finish()
    if tail:
        row.job.emit(Piece(tail))
    row.finish(Finished(reason, len(row.text.ids)))
