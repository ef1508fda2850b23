"""Run the app with uvicorn: bind, print the banner, shut down cleanly on SIGTERM/SIGINT.

On a signal the listening socket closes at once (new connections are refused), requests in flight
get ``grace_period_s`` to finish; whatever is still running then is cancelled (its client sees the
stream end), the scheduler stops and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import Any, Callable

import uvicorn

from slipstream.serving.app import batching_mode, create_app, is_encoder, kv_cache_dtype, task_of
from slipstream.serving.settings import DeploymentSettings

log = logging.getLogger("slipstream.serving")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, settings: DeploymentSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the connection limit from ``max_connections``, then ``options``."""
    # uvicorn counts the connection a request arrives on among the open ones and refuses at >= its
    # limit_concurrency, so max_connections + 1 lets exactly max_connections be served at once
    return uvicorn.Config(app, limit_concurrency=settings.max_connections + 1, **options)


def banner(url: str, model_name: str, engine: Any, settings: DeploymentSettings) -> list[str]:
    if is_encoder(engine):
        return encoder_banner(url, model_name, engine, settings)
    info = engine.info()
    options = getattr(engine, "options", None)  # the engine's options in force (slipstream.engines.options)
    s = settings
    caches = [f"exact={'on' if s.exact_cache.enabled else 'off'}",
              f"semantic={'on (threshold ' + str(s.semantic_cache.threshold) + ')' if s.semantic_cache.enabled else 'off'}",
              f"prefix={'on' if s.prefix_cache.enabled else 'off'}"]
    d = s.defaults
    return [
        f"slipstream serve: listening on {url}",
        f"  model      {model_name} (context {engine.max_context} tokens)",
        f"  engine     {info.engine} ({info.compute_type}, {info.device}, {info.threads} threads"
        + "".join(f", {k}={info.details[k]}" for k in ("gemm", "head_dtype") if k in info.details) + ")",
        *([f"  options    {options.summary()}"] if options is not None else []),
        f"  batching   {batching_mode(engine, s)}, max_batch_size={s.max_batch_size}, max_queue={s.max_queue}"
        + (f", window={s.batch_window_ms} ms, max_prompt_spread={s.max_prompt_spread}"
           if batching_mode(engine, s) == "dynamic" else "")
        + (f", kv_cache_dtype={kv_cache_dtype(engine, s)}" if batching_mode(engine, s) == "continuous" else ""),
        f"  defaults   temperature={d.temperature} top_p={d.top_p} top_k={d.top_k} max_tokens={d.max_tokens} "
        f"n={d.n} seed={d.seed} stop={d.stop}",
        f"  limits     max_tokens={s.limits.max_tokens} max_n={s.limits.max_n} "
        f"max_temperature={s.limits.max_temperature} max_queued_tokens={s.max_queued_tokens} "
        f"deadline_s={s.deadline_s} max_body_bytes={s.max_body_bytes} max_connections={s.max_connections}",
        f"  caches     {' '.join(caches)}",
        *([f"  adapters   {', '.join(a.name + (' (pinned)' if a.pinned else '') for a in s.adapters)}; "
           f"max_loras={s.max_loras}"] if s.adapters else []),
        f"  api keys   {len(s.api_keys) if s.api_keys else 'none (no authentication)'}",
        f"  shutdown   SIGTERM: {s.grace_period_s:g} s grace for requests in flight",
        f"  endpoints  {url}/v1/completions {url}/v1/chat/completions {url}/v1/models {url}/health {url}/metrics"
        + (f" {url}/openapi.json" if s.openapi else ""),
    ]


def _engine_line(engine: Any) -> list[str]:
    info = engine.info()
    options = getattr(engine, "options", None)  # the engine's options in force (slipstream.engines.options)
    return [f"  engine     {info.engine} ({info.compute_type}, {info.device}, {info.threads} threads)",
            *([f"  options    {options.summary()}"] if options is not None else [])]


def encoder_banner(url: str, model_name: str, engine: Any, settings: DeploymentSettings) -> list[str]:
    s = settings
    batch = 1 if s.batching == "sequential" else s.max_batch_size
    shorter = "truncated and renormalised (embeddings.matryoshka)" if s.embeddings.matryoshka else "refused"
    return [
        f"slipstream serve: listening on {url}",
        f"  model      {model_name} ({task_of(engine)}, {engine.dimensions} dimensions, context "
        f"{engine.max_context} tokens)",
        *_engine_line(engine),
        f"  batching   inputs of concurrent requests, max_batch_size={batch} inputs, window={s.batch_window_ms} ms, "
        f"max_queue={s.max_queue} inputs",
        f"  limits     inputs per request {batch + s.max_queue}, tokens per input {engine.max_context}, "
        f"max_queued_tokens={s.max_queued_tokens} deadline_s={s.deadline_s} max_body_bytes={s.max_body_bytes} "
        f"max_connections={s.max_connections}",
        f"  dimensions {engine.dimensions}; fewer {shorter}",
        f"  api keys   {len(s.api_keys) if s.api_keys else 'none (no authentication)'}",
        f"  shutdown   SIGTERM: {s.grace_period_s:g} s grace for requests in flight",
        f"  endpoints  {url}/v1/embeddings {url}/v1/models {url}/health {url}/metrics"
        + (f" {url}/openapi.json" if s.openapi else ""),
    ]


def serve(engine: Any, settings: DeploymentSettings, *, model_name: str, embedder: Any = None,
          echo: Callable[[str], None] | None = None, adapters: Any = None) -> None:
    echo = echo or (lambda line: print(line, flush=True))
    app = create_app(engine, settings, model_name=model_name, embedder=embedder, adapters=adapters)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=settings.grace_period_s,
                            access_log=False, lifespan="on")
    server = _Server(config, app.state.slipstream, echo)
    for line in banner(url, model_name, engine, settings):
        echo(line)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        engine.close()
    echo(f"slipstream serve: stopped ({server.shutdown_note})")
    sys.stdout.flush()


class _Server(uvicorn.Server):
    """uvicorn's server, saying what it does when asked to stop."""

    def __init__(self, config: uvicorn.Config, state: Any, echo: Callable[[str], None]):
        super().__init__(config)
        self.state, self.echo = state, echo
        self.shutdown_note = "no signal"

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            sched = self.state.scheduler
            busy = len(sched.running) + sched.queue_depth
            self.shutdown_note = f"signal {sig}"
            self.echo(f"slipstream serve: shutting down on signal {sig}; {busy} request(s) in flight, "
                      f"{self.config.timeout_graceful_shutdown:g} s grace")
        # uvicorn's own handler also re-raises the signal once it has shut down, which would end the
        # process with 128+signal; a clean shutdown here exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
