"""Run one HTTP request through an ASGI app in this process and stream its response messages.

A replica holds ``slipstream serve``'s own FastAPI app; the endpoint hands it each request as plain data
(:class:`Forwarded`) over a Ray handle, and this module plays the HTTP server's part: it feeds the body,
and yields the response's start and body parts as they are sent. When the caller stops reading (the client
went away), the app is told ``http.disconnect``, which is how the routes learn to free their batch slots.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

# a request's work ends with the app; this is how long a disconnected request may take to unwind
_UNWIND_S = 5.0


@dataclass(frozen=True)
class Forwarded:
    method: str
    path: str
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class Start:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]


def scope(request: Forwarded) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": request.method, "scheme": "http", "path": request.path, "raw_path": request.path.encode(),
            "root_path": "", "query_string": request.query_string, "headers": list(request.headers),
            "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}


async def stream(app: Any, request: Forwarded) -> AsyncIterator[Start | bytes]:
    """The response: a :class:`Start`, then its body in the pieces the app sent."""
    sent: asyncio.Queue = asyncio.Queue()
    gone = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await sent.put(message)

    task = asyncio.ensure_future(app(scope(request), receive, send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    finished = False
    try:
        while True:
            message = await sent.get()
            if message is None:
                task.result()  # the app raised: let it surface
                return
            if message["type"] == "http.response.start":
                yield Start(message["status"], tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ())))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    finished = True
                    return
    finally:
        gone.set()
        if not finished and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), _UNWIND_S)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                task.cancel()
