"""The service between the routes and the scheduler: caches, choices, streaming, metrics.

A request becomes a :class:`Job`: either an answer from a cache, or ``n`` tickets in the scheduler
(submitted at once, so a full queue is a 429 before any response starts). A job is read whole
(:meth:`Job.result`) or as it is made (:meth:`Job.deltas`). When the reader goes away, every ticket
of the job is cancelled and its batch slot freed at the next step.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Hashable, Sequence

import numpy as np

from slipstream.serving.caches import ExactCache, SemanticCache, deterministic, exact_key
from slipstream.serving.errors import ApiError, queue_full
from slipstream.serving.metrics import Metrics
from slipstream.serving.params import SEEDS, Plan
from slipstream.serving.scheduler import QueueFull, Scheduler, Ticket
from slipstream.serving.textstream import TextStream


@dataclass(frozen=True)
class Choice:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class Generated:
    choices: tuple[Choice, ...]
    prompt_tokens: int
    cache: str | None = None  # "exact" or "semantic" when answered from a cache

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)


@dataclass(frozen=True)
class Delta:
    index: int
    text: str
    finish_reason: str | None = None


class Service:
    def __init__(self, engine: Any, scheduler: Scheduler, metrics: Metrics, *,
                 exact: ExactCache | None = None, semantic: SemanticCache | None = None,
                 deadline_s: float | None = None):
        self.engine, self.scheduler, self.metrics = engine, scheduler, metrics
        self.deadline_s = deadline_s
        self.tokenizer = engine.tokenizer
        self.exact, self.semantic = exact, semantic

    async def open(self, kind: str, prompt: Sequence[int], plan: Plan, *,
                   semantic_text: str | None = None) -> "Job":
        """Start generating (or find the answer in a cache). Raises a 429 ApiError when the queue is full."""
        assert plan.params is not None
        params = plan.params
        scope: Hashable = (kind, asdict(params).__repr__(), plan.stops, plan.n)
        key = None
        if self.exact is not None and deterministic(params):
            key = exact_key(kind, list(prompt), asdict(params), list(plan.stops), plan.n)
            hit = self.exact.get(key)
            self.metrics.cache_hits.labels("exact").inc() if hit else self.metrics.cache_misses.labels("exact").inc()
            if hit is not None:
                return Job(self, plan, [], Generated(hit.choices, hit.prompt_tokens, "exact"))
        vector = None
        if self.semantic is not None and semantic_text:
            vector = await asyncio.to_thread(self.semantic.vector, semantic_text)
            hit = self.semantic.get(vector, scope)
            (self.metrics.cache_hits if hit else self.metrics.cache_misses).labels("semantic").inc()
            if hit is not None:
                return Job(self, plan, [], Generated(hit.choices, hit.prompt_tokens, "semantic"))
        tickets: list[Ticket] = []
        try:
            for i in range(plan.n):
                seed = None if params.seed is None else (params.seed + i) % SEEDS
                tickets.append(self.scheduler.submit(prompt, params.with_(seed=seed) if i else params))
        except QueueFull as exc:
            for t in tickets:
                t.cancel()
            self.metrics.rejected.inc()
            raise queue_full(str(exc)) from None
        self.metrics.prompt_tokens.inc(len(prompt))
        if params.adapter is not None:
            self.metrics.adapter_requests.labels(params.adapter).inc(len(tickets))
        return Job(self, plan, tickets, None, store=(key, vector, scope), prompt_tokens=len(prompt))

    async def logprobs(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Full next-token log-distributions, computed on the engine's thread between steps."""
        return await asyncio.wrap_future(self.scheduler.call(lambda: self.engine.logprobs(sequences)))

    def remember(self, store: tuple, result: Generated) -> None:
        key, vector, scope = store
        if key is not None and self.exact is not None:
            self.exact.put(key, result)
        if vector is not None and self.semantic is not None:
            self.semantic.put(vector, scope, result)


class Job:
    def __init__(self, service: Service, plan: Plan, tickets: list[Ticket], cached: Generated | None,
                 store: tuple = (None, None, None), prompt_tokens: int = 0):
        self.service, self.plan, self.tickets, self.cached = service, plan, tickets, cached
        self._store, self._prompt_tokens = store, prompt_tokens
        self.final: Generated | None = cached  # the whole answer, once it is complete

    def abandon(self) -> None:
        """The reader has gone: cancel what is still generating (counted in the metrics)."""
        for t in self.tickets:
            self._cancel(t)

    def _cancel(self, ticket: Ticket) -> None:
        if not ticket.finished and not ticket.cancelled:
            self.service.metrics.cancelled.inc()
            ticket.cancel()

    async def result(self) -> Generated:
        if self.cached is not None:
            return self.cached
        try:
            choices = await asyncio.gather(*(self._follow(i, t, None) for i, t in enumerate(self.tickets)))
        finally:
            self.abandon()
        return self._finished(choices)

    async def deltas(self) -> AsyncIterator[Delta]:
        """Text deltas of every choice as they are made; the last one of each has its finish reason."""
        if self.cached is not None:
            for i, c in enumerate(self.cached.choices):
                yield Delta(i, c.text)
                yield Delta(i, "", c.finish_reason)
            return
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(self._follow(i, t, queue)) for i, t in enumerate(self.tickets)]
        try:
            open_choices = len(tasks)
            while open_choices:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    open_choices -= 1
                yield item
            self._finished(await asyncio.gather(*tasks))  # each has sent its last delta; wait for it to return
        finally:
            self.abandon()
            for task in tasks:
                task.cancel()

    def _finished(self, choices: Sequence[Choice]) -> Generated:
        self.final = Generated(tuple(choices), self._prompt_tokens)
        self.service.remember(self._store, self.final)
        return self.final

    async def _follow(self, index: int, ticket: Ticket, out: asyncio.Queue | None) -> Choice:
        """One ticket's choice, within the deployment's deadline; errors go to ``out`` too when streaming."""
        deadline = self.service.deadline_s
        try:
            if deadline is None:
                return await self._read(index, ticket, out)
            left = max(0.0, ticket.submitted + deadline - time.perf_counter())
            try:
                return await asyncio.wait_for(self._read(index, ticket, out), left)
            except asyncio.TimeoutError:
                self.service.metrics.expired.inc()
                ticket.cancel()  # its slot is freed at the next step
                raise ApiError(503, f"the request ran past this server's deadline of {deadline:g} s (deadline_s) "
                               "and was cancelled; ask for fewer tokens or retry later", type="server_error",
                               code="deadline_exceeded") from None
        except ApiError as exc:
            if out is not None:
                out.put_nowait(exc)
            raise
        finally:  # the reader went away (or the request failed): free the slot
            self._cancel(ticket)

    async def _read(self, index: int, ticket: Ticket, out: asyncio.Queue | None) -> Choice:
        """Read one ticket's tokens into text, stop sequences applied; feed ``out`` with deltas."""
        m = self.service.metrics
        stream = TextStream(self.service.tokenizer, self.plan.stops)
        first = last = None
        count = 0
        while True:
            kind, value = await ticket.next_event()
            if kind == "token":
                last = time.perf_counter()
                if first is None:
                    first = last
                    m.ttft.observe(first - ticket.submitted)
                count += 1
                m.tokens(1)
                if self.plan.params.adapter is not None:
                    m.adapter_tokens.labels(self.plan.params.adapter).inc()
                delta = stream.push(value)
                if delta and out is not None:
                    out.put_nowait(Delta(index, delta))
                if stream.stopped:
                    ticket.cancel()
                    reason = "stop"
                    break
            elif kind == "done":
                reason = value
                break
            else:
                raise ApiError(500, str(value), type="server_error")
        if reason == "cancelled":
            raise ApiError(503, "the server is shutting down; the request was cancelled", type="server_error")
        tail = stream.flush()
        if out is not None:
            out.put_nowait(Delta(index, tail, reason))
        if count > 1:
            m.tpot.observe((last - first) / (count - 1))
        m.latency.observe(time.perf_counter() - ticket.submitted)
        return Choice(stream.text, tuple(stream.token_ids()), reason)
