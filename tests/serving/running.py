"""Start a real uvicorn server on 127.0.0.1 (a free port) in a thread, for the API tests."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx


class RunningServer:
    def __init__(self, engine: Any, settings: Any, model_name: str, embedder: Any = None, adapters: Any = None):
        import uvicorn

        from slipstream.serving.app import create_app
        from slipstream.serving.server import bind, uvicorn_config

        self.app = create_app(engine, settings, model_name=model_name, embedder=embedder, adapters=adapters)
        self.state = self.app.state.slipstream
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def client(self, api_key: str = "none", **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kwargs)

    def metrics(self, headers: dict | None = None) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", headers=headers or {}).text
        return parse_metrics(text)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = re.match(r"^(\S+)\s+(\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


def wait_for(predicate: Any, timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


class Slowed:
    """A real engine whose batch steps each take at least ``delay`` seconds, with a log of every step.

    The tiny test model decodes a token in about a millisecond; tests that must catch a request while it
    runs (joining a batch, disconnecting, a full queue) slow it down. ``steps`` records, per step, the
    ids of the sequences that got a token, so a test can see who shared which step.
    """

    def __init__(self, engine: Any, delay: float):
        self._engine, self.delay = engine, delay
        self.steps: list[list[int]] = []
        self.steppers: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def stepper(self, **options: Any) -> Any:
        s = _SlowStepper(self._engine.stepper(**options), self)
        self.steppers.append(s)
        return s


class _SlowStepper:
    def __init__(self, inner: Any, owner: Slowed):
        self.inner, self.owner = inner, owner
        self.added: dict[int, int] = {}  # seq id -> index of the first step after it was added

    def add(self, seq_id: int, prompt: Any, params: Any) -> None:
        self.added[seq_id] = len(self.owner.steps)
        self.inner.add(seq_id, prompt, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def step(self) -> Any:
        start = time.perf_counter()
        out = self.inner.step()
        self.owner.steps.append([o.seq_id for o in out if o.token is not None])
        time.sleep(max(0.0, self.owner.delay - (time.perf_counter() - start)))
        return out
