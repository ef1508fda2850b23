"""What the endpoint modules share: the server state, model check, SSE framing, disconnects."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from slipstream.serving.errors import ApiError

T = TypeVar("T")


def server(request: Request) -> Any:
    return request.app.state.slipstream


def adapter_names(st: Any) -> list[str]:
    bank = getattr(st.engine, "adapter_bank", None)
    return sorted(bank.paths) if bank is not None and st.adapters is not None else []


def check_model(request: Request, name: str) -> str | None:
    """The LoRA adapter the request's ``model`` names (``ADAPTER`` or ``MODEL:ADAPTER``), None for the model
    itself; a 404 in OpenAI's shape for anything else."""
    st = server(request)
    if name == st.model_name:
        return None
    adapter = name[len(st.model_name) + 1:] if name.startswith(st.model_name + ":") else name
    served = adapter_names(st)
    if adapter in served:
        return adapter
    also = f" and its adapters {', '.join(served)}" if served else ""
    raise ApiError(404, f"The model '{name}' does not exist; this server serves '{st.model_name}'{also}.",
                   type="not_found_error", param="model", code="model_not_found")


def with_adapter(p: Any, adapter: str | None, *, scoring: bool) -> Any:
    """The request's plan with its adapter; ``scoring`` (logprobs, echo) is refused with one: the scoring
    path reads the base model."""
    if adapter is None:
        return p
    if scoring:
        from slipstream.serving.errors import bad_request

        raise bad_request("logprobs and echo are not available with a LoRA adapter; ask without them",
                          "logprobs")
    if p.params is None:
        return p
    from dataclasses import replace

    return replace(p, params=p.params.with_(adapter=adapter))


def count(request: Request, status: int) -> None:
    server(request).metrics.requests.labels(request.url.path, str(status)).inc()


class ClientGone(Exception):
    pass


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client hangs up first, cancel it (freeing its batch slots)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise ClientGone()


def sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    async def frames() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
        except ApiError as exc:  # after the response started: report in the stream, as OpenAI does
            yield f"data: {json.dumps(exc.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
