"""Queueing and batching between HTTP requests and one engine. Model-free: it sees token ids only.

One worker thread owns the engine; request handlers (asyncio) submit :class:`Ticket` objects and read
their tokens back. Admission is bounded: past ``max_batch_size`` running plus ``max_queue`` waiting,
:meth:`Scheduler.submit` raises :class:`QueueFull` at once. Three ways to run the queue:

- :class:`ContinuousScheduler` (engines with a :class:`~slipstream.engines.stepping.Stepper`): a
  waiting request joins the running batch at the next step; a finished or cancelled one leaves at once.
- :class:`DynamicScheduler` (whole-batch engines): collect requests for ``window_s`` (or until the
  batch is full), run them as one batch; with ``generate_rows`` tokens stream out as they are made.
  Prompts in one batch differ in length by at most ``prompt_spread`` tokens: CTranslate2 runs only
  the shortest prompt's length as a prefill and force-decodes the rest one step at a time, so a
  batch of very different prompt lengths would spend hundreds of steps before its first token.
- :class:`SequentialScheduler`: one request at a time through ``engine.stream`` (the baseline).
- :class:`EmbeddingScheduler` (encoders): each input of a /v1/embeddings request is a ticket; inputs of
  concurrent requests are collected for ``window_s`` (or until ``max_batch_size`` inputs wait) and embedded
  in one ``engine.embed`` call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from slipstream.engines.protocol import SamplingParams
from slipstream.engines.stepping import Stepper, batch_key

log = logging.getLogger("slipstream.serving")


class QueueFull(Exception):
    """The scheduler holds as many requests as it may; the caller should answer 429."""


class Ticket:
    """One generation request: submitted from asyncio, fed from the worker thread.

    Events read with :meth:`next_event`: ``("token", id)``, then ``("done", finish_reason)`` where
    the reason is "stop", "length" or "cancelled", or ``("error", message)``.
    """

    def __init__(self, seq_id: int, prompt: Sequence[int], params: SamplingParams,
                 loop: asyncio.AbstractEventLoop | None):
        self.seq_id, self.prompt, self.params = seq_id, list(prompt), params
        self.cancelled = False
        self.finished = False
        self.submitted = time.perf_counter()
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._wake: Callable[[], None] = lambda: None

    def emit(self, kind: str, value: Any) -> None:  # worker thread
        if kind != "token":
            self.finished = True
        if self._loop is None:
            self._queue.put_nowait((kind, value))
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))

    async def next_event(self) -> tuple[str, Any]:
        return await self._queue.get()

    def cancel(self) -> None:
        """The client has gone (or a stop string was seen): free the slot at the next step."""
        if not self.cancelled and not self.finished:
            self.cancelled = True
            self._wake()


class Scheduler:
    """Admission, the worker thread and jobs run between steps; subclasses run the batch."""

    mode = "base"

    def __init__(self, *, max_batch_size: int, max_queue: int, max_queued_tokens: int | None = None,
                 on_batch: Callable[[int], None] | None = None):
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.max_queued_tokens = max_queued_tokens
        self.on_batch = on_batch or (lambda rows: None)
        self.waiting: deque[Ticket] = deque()
        self.running: dict[int, Ticket] = {}
        self._jobs: deque[tuple[Callable[[], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.peak_batch = 0

    # called from the event loop -----------------------------------------------------------
    @property
    def alive(self) -> bool:
        return not self._stopping

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    def submit(self, prompt: Sequence[int], params: SamplingParams) -> Ticket:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.running) + len(self.waiting) >= self.max_batch_size + self.max_queue:
                raise QueueFull(f"the queue is full ({len(self.waiting)} waiting, "
                                f"{len(self.running)} running); retry later")
            # a request that will have to wait counts its prompt and max_tokens against the queue's token
            # budget; one that takes a free slot at once does not, so a lone long request is never refused
            cost = len(prompt) + params.max_tokens
            if self.max_queued_tokens is not None and len(self.running) + len(self.waiting) >= self.max_batch_size:
                queued = sum(len(t.prompt) + t.params.max_tokens for t in self.waiting)
                if queued + cost > self.max_queued_tokens:
                    raise QueueFull(f"the queue holds {queued} tokens (prompts plus max_tokens); this request's "
                                    f"{cost} would pass its limit of {self.max_queued_tokens} (max_queued_tokens); "
                                    "retry later")
            ticket = Ticket(next(self._ids), prompt, params, loop)
            ticket._wake = self._notify
            self.waiting.append(ticket)
            self._cond.notify_all()
        return ticket

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the worker thread between steps (engine calls must not overlap)."""
        fut: Future = Future()
        with self._cond:
            self._jobs.append((fn, fut))
            self._cond.notify_all()
        return fut

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self._loop, name=f"scheduler-{self.mode}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel whatever is still queued or running and stop the worker."""
        with self._cond:
            self._stopping = True
            for t in list(self.waiting) + list(self.running.values()):
                t.cancelled = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            for t in list(self.waiting) + list(self.running.values()):
                if not t.finished:
                    t.emit("done", "cancelled")
            self.waiting.clear()
            self.running.clear()
            while self._jobs:
                self._jobs.popleft()[1].cancel()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self.waiting or self.running or self._jobs or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                jobs = list(self._jobs)
                self._jobs.clear()
                self._drop_cancelled_waiting()
            for fn, fut in jobs:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
            try:
                self._run_once()
            except Exception as exc:  # noqa: BLE001 - an engine failure must not kill the server
                log.exception("engine step failed")
                self._fail_running(f"engine error: {exc.__class__.__name__}: {exc}")

    def _drop_cancelled_waiting(self) -> None:
        for t in [t for t in self.waiting if t.cancelled]:
            self.waiting.remove(t)
            t.emit("done", "cancelled")

    def _fail_running(self, message: str) -> None:
        for t in list(self.running.values()):
            t.emit("error", message)
        self.running.clear()

    def _admit(self, limit: int, accept: Callable[[Ticket], bool] = lambda t: True) -> list[Ticket]:
        """Move up to ``limit`` waiting tickets that ``accept`` to running (in arrival order)."""
        taken: list[Ticket] = []
        with self._cond:
            for t in list(self.waiting):
                if len(taken) >= limit:
                    break
                if accept(t):
                    self.waiting.remove(t)
                    self.running[t.seq_id] = t
                    taken.append(t)
        return taken

    def _finish(self, ticket: Ticket, reason: str) -> None:
        with self._cond:
            self.running.pop(ticket.seq_id, None)
        ticket.emit("done", reason)

    def _collect(self, window_s: float) -> None:
        """Wait up to ``window_s`` (from the oldest arrival) for the batch to fill (dynamic batching)."""
        with self._cond:
            while self.waiting and len(self.waiting) < self.max_batch_size and not self._stopping:
                left = self.waiting[0].submitted + window_s - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)

    def _record_batch(self, rows: int) -> None:
        self.peak_batch = max(self.peak_batch, rows)
        self.on_batch(rows)

    def _run_once(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ContinuousScheduler(Scheduler):
    mode = "continuous"

    def __init__(self, stepper: Stepper, on_step: Callable[[float], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.stepper = stepper
        self.on_step = on_step or (lambda seconds: None)

    def _fail_running(self, message: str) -> None:
        # the failed step's sequences leave the stepper too, or they would hold its rows (and keys/values)
        for seq_id in list(self.running):
            try:
                self.stepper.remove(seq_id)
            except Exception:  # noqa: BLE001 - a broken stepper must not keep the others from their error
                log.exception("could not remove sequence %d after a failed step", seq_id)
        super()._fail_running(message)

    def _run_once(self) -> None:
        for t in [t for t in self.running.values() if t.cancelled]:
            self.stepper.remove(t.seq_id)
            self._finish(t, "cancelled")
        for t in self._admit(self.max_batch_size - len(self.running)):
            try:
                self.stepper.add(t.seq_id, t.prompt, t.params)
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the others
                with self._cond:
                    self.running.pop(t.seq_id, None)
                t.emit("error", f"{exc.__class__.__name__}: {exc}")
        if not self.running:
            return
        self._record_batch(self.stepper.active)
        start = time.perf_counter()
        outs = self.stepper.step()
        self.on_step(time.perf_counter() - start)
        for out in outs:
            t = self.running.get(out.seq_id)
            if t is None:
                continue
            if out.token is not None:
                t.emit("token", out.token)
            if out.finish_reason:
                self._finish(t, out.finish_reason)


class DynamicScheduler(Scheduler):
    mode = "dynamic"

    def __init__(self, engine: Any, *, window_s: float = 0.005, prompt_spread: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.engine, self.window_s, self.prompt_spread = engine, window_s, prompt_spread

    def _run_once(self) -> None:
        self._collect(self.window_s)
        if not self.waiting:
            return
        rows = callable(getattr(self.engine, "generate_rows", None))
        chosen = self._choose(rows)
        batch = self._admit(self.max_batch_size, lambda t: t.seq_id in chosen)
        if not batch:
            return
        self._record_batch(len(batch))
        prompts, params = [t.prompt for t in batch], [t.params for t in batch]
        if rows:
            def on_token(row: int, token: int) -> bool:
                t = batch[row]
                if t.cancelled:
                    return True
                t.emit("token", token)
                return False

            results = self.engine.generate_rows(prompts, params, on_token)
        else:
            results = self.engine.generate(prompts, batch[0].params)
            for t, c in zip(batch, results):
                for token in c.token_ids:
                    t.emit("token", token)
        for t, c in zip(batch, results):
            self._finish(t, "cancelled" if t.cancelled else c.finish_reason)


    def _choose(self, rows: bool) -> set[int]:
        """The oldest request and those that can share its batch: same sampling, prompts of close length."""
        with self._cond:
            first = self.waiting[0]
            key = batch_key(first.params) if rows else first.params
            fits = [t for t in self.waiting
                    if not t.cancelled and (batch_key(t.params) if rows else t.params) == key]
        if self.prompt_spread is None:
            return {t.seq_id for t in fits[: self.max_batch_size]}
        base = len(first.prompt)
        lo = hi = base
        chosen: set[int] = set()
        for t in sorted(fits, key=lambda t: (abs(len(t.prompt) - base), t.seq_id)):
            n = len(t.prompt)
            if len(chosen) >= self.max_batch_size:
                break
            if max(hi, n) - min(lo, n) <= self.prompt_spread:
                lo, hi = min(lo, n), max(hi, n)
                chosen.add(t.seq_id)
        return chosen


class SequentialScheduler(Scheduler):
    """One request at a time over ``engine.stream``: the baseline that batching is measured against."""

    mode = "sequential"

    def __init__(self, engine: Any, **kwargs: Any):
        super().__init__(**{**kwargs, "max_batch_size": 1})
        self.engine = engine

    def _run_once(self) -> None:
        batch = self._admit(1, lambda t: not t.cancelled)
        if not batch:
            return
        t = batch[0]
        self._record_batch(1)
        count = 0
        tokens = self.engine.stream(t.prompt, t.params)
        try:
            for token in tokens:
                if t.cancelled:
                    break
                t.emit("token", token)
                count += 1
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
        self._finish(t, "cancelled" if t.cancelled else ("length" if count >= t.params.max_tokens else "stop"))


EMBED = SamplingParams(max_tokens=1)  # an input's ticket generates nothing: its queue cost is its tokens, plus one


class EmbeddingScheduler(Scheduler):
    """Dynamic batching for an :class:`~slipstream.engines.protocol.Encoder`: one ticket per input, any
    request's; a batch is the waiting inputs (up to ``max_batch_size``) after the oldest has waited ``window_s``.
    A ticket gets ``("embedding", vector)``, or ``("error", message)`` when the engine fails, or
    ``("done", "cancelled")`` when the server stops first."""

    mode = "embeddings"

    def __init__(self, engine: Any, *, window_s: float = 0.005, **kwargs: Any):
        super().__init__(**kwargs)
        self.engine, self.window_s = engine, window_s

    def _run_once(self) -> None:
        self._collect(self.window_s)
        batch = self._admit(self.max_batch_size, lambda t: not t.cancelled)
        if not batch:
            return
        self._record_batch(len(batch))
        vectors = self.engine.embed([t.prompt for t in batch])
        with self._cond:
            for t in batch:
                self.running.pop(t.seq_id, None)
        for t, vector in zip(batch, vectors):
            t.emit("embedding", vector)
