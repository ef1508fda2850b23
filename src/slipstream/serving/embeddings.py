"""The embedding service between POST /v1/embeddings and the encoder's scheduler: inputs in, vectors out.

Each input of a request is a ticket in the :class:`~slipstream.serving.scheduler.EmbeddingScheduler`,
submitted at once (a full queue is a 429 before anything runs), so inputs of concurrent requests share
``engine.embed`` calls. Model-free: it sees token ids and vectors only. (The semantic cache's own sentence
encoder is :mod:`slipstream.serving.embedder`.)
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, Sequence

import numpy as np

from slipstream.serving.errors import ApiError, queue_full
from slipstream.serving.metrics import Metrics
from slipstream.serving.scheduler import EMBED, QueueFull, Scheduler, Ticket


class EmbeddingService:
    def __init__(self, engine: Any, scheduler: Scheduler, metrics: Metrics, *, deadline_s: float | None = None):
        self.engine, self.scheduler, self.metrics = engine, scheduler, metrics
        self.deadline_s = deadline_s
        self.tokenizer = engine.tokenizer
        # whether the model's vectors are unit length: a shortened one is scaled back to unit length then
        self.normalized = bool(engine.info().details.get("normalize", True))

    async def embed(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(sequences), dimensions]`` float32, each row from the batch its input ran in. Raises a 429
        ApiError when the queue cannot take every input, 503 past the deadline or while shutting down, 500
        when the engine fails."""
        tickets: list[Ticket] = []
        try:
            for ids in sequences:
                tickets.append(self.scheduler.submit(ids, EMBED))
        except QueueFull as exc:
            for t in tickets:
                t.cancel()
            self.metrics.rejected.inc()
            raise queue_full(str(exc)) from None
        self.metrics.prompt_tokens.inc(sum(len(s) for s in sequences))
        start = time.perf_counter()
        reading = asyncio.gather(*(self._read(t) for t in tickets))
        try:
            if self.deadline_s is None:
                vectors = await reading
            else:
                try:
                    vectors = await asyncio.wait_for(reading, self.deadline_s)
                except asyncio.TimeoutError:
                    self.metrics.expired.inc()
                    raise ApiError(503, f"the request ran past this server's deadline of {self.deadline_s:g} s "
                                   "(deadline_s) and was cancelled; send fewer inputs or retry later",
                                   type="server_error", code="deadline_exceeded") from None
        finally:  # answered, failed or abandoned: inputs still waiting leave the queue
            reading.cancel()
            for t in tickets:
                t.cancel()
        self.metrics.latency.observe(time.perf_counter() - start)
        return np.stack(vectors).astype(np.float32, copy=False)

    @staticmethod
    async def _read(ticket: Ticket) -> np.ndarray:
        kind, value = await ticket.next_event()
        if kind == "embedding":
            return np.asarray(value, np.float32)
        if kind == "error":
            raise ApiError(500, str(value), type="server_error")
        raise ApiError(503, "the server is shutting down; the request was cancelled", type="server_error")


def shorten(vectors: np.ndarray, dimensions: int, *, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` of each vector (a Matryoshka model's shorter embedding), back to unit length
    when the model's vectors are (as OpenAI's shortened embeddings are)."""
    out = vectors[:, :dimensions]
    if normalize:
        out = out / np.clip(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12, None)
    return out.astype(np.float32, copy=False)


def encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """A vector as the response carries it: floats, or base64 of its little-endian float32 bytes (what
    OpenAI's clients decode)."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32, copy=False).tolist()
