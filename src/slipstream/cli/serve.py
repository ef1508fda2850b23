"""``slipstream serve VARIANT``: an OpenAI-compatible endpoint for a model or variant in the store."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from slipstream.cli.engine_options import HELP as ENGINE_OPTION_HELP


def serve_cmd(
    variant: str = typer.Argument(..., help="Model or variant in the store"),
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000; 0 picks a free one)"),
    config: Optional[Path] = typer.Option(None, "--config", help="Deployment settings file (YAML or JSON)"),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="Accept this key (repeatable); "
                                                "with keys set, every route but /health needs one"),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="Sequences decoded together"),
    max_queue: Optional[int] = typer.Option(None, "--max-queue", help="Waiting requests before 429"),
    batching: Optional[str] = typer.Option(None, "--batching", help="auto, continuous, dynamic or sequential"),
    batch_window_ms: Optional[float] = typer.Option(None, "--batch-window-ms", help="Dynamic batching window"),
    grace_period: Optional[float] = typer.Option(None, "--grace-period", help="Seconds to finish requests "
                                                 "in flight on SIGTERM"),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name", help="Model name in the API"),
    exact_cache: Optional[bool] = typer.Option(None, "--exact-cache/--no-exact-cache", help="Exact-match cache"),
    prefix_cache: Optional[bool] = typer.Option(None, "--prefix-cache/--no-prefix-cache",
                                                help="Reuse shared prompt prefixes (continuous batching)"),
    semantic_cache: Optional[bool] = typer.Option(None, "--semantic-cache/--no-semantic-cache",
                                                  help="Answer near-identical questions from the cache"),
    semantic_threshold: Optional[float] = typer.Option(None, "--semantic-threshold", help="Cosine similarity"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Engine CPU threads (default: all)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine to run the variant on"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda"),
    assignments: Optional[List[str]] = typer.Option(None, "--set", help="Any setting as key=value, e.g. "
                                                    "defaults.temperature=0.7 or limits.max_tokens=256"),
    engine_option: Optional[List[str]] = typer.Option(None, "--engine-option", help=ENGINE_OPTION_HELP),
    adapter: Optional[List[str]] = typer.Option(None, "--adapter", help="Serve this LoRA adapter from the store "
                                                "over the model (repeatable); requests name it as their model"),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated",
                                               help="Listen beyond loopback with no API key (refused otherwise)"),
) -> None:
    """Serve VARIANT over HTTP with OpenAI's API: completions, chat, streaming, batching, caches, metrics
    (an embedding model: /v1/embeddings, its inputs batched across requests)."""
    from slipstream.cli.engine_options import engine_options
    from slipstream.engines.loading import engine_name, open_engine
    from slipstream.serving.settings import DeploymentSettings, parse_assignment
    from slipstream.store import Store

    overrides = {
        "host": host, "port": port, "api_keys": list(api_key) if api_key else None,
        "max_batch_size": max_batch_size, "max_queue": max_queue, "batching": batching,
        "batch_window_ms": batch_window_ms, "grace_period_s": grace_period, "served_model_name": served_model_name,
        "exact_cache.enabled": exact_cache, "prefix_cache.enabled": prefix_cache,
        "semantic_cache.enabled": semantic_cache, "semantic_cache.threshold": semantic_threshold, "threads": threads,
        "adapters": list(adapter) if adapter else None,
    }
    overrides.update(dict(parse_assignment(a) for a in assignments or ()))
    settings = DeploymentSettings.load(config, overrides)
    from slipstream.serving.auth import check_exposure, is_loopback

    check_exposure(settings.host, settings.api_keys, allow_unauthenticated)  # before anything is loaded
    if not settings.api_keys and not is_loopback(settings.host):
        from slipstream.cli.output import err

        err.print(f"warning: listening on {settings.host or 'every interface'} with no API key "
                  "(--allow-unauthenticated)", highlight=False)
    store = Store()
    record = store.get(variant)
    from slipstream.serving.server import serve

    given = {k for k, v in overrides.items() if v is not None}
    settings, engine, recommended = _recommended(store, record, settings, engine, config, given)
    name = engine_name(record, engine)
    # a search's recommendation < environment < settings file < command line
    options = recommended.get(name, {}) | engine_options(name, engine_option, settings.engine)
    if name == "vllm" and settings.adapters and not options.get("max_loras"):
        options = {**options, "max_loras": settings.max_loras}  # vLLM must start with LoRA on
    loaded = open_engine(record, engine=name, device=device, threads=settings.threads, store=store, options=options)
    from slipstream.serving.adapters import AdapterCatalog

    serve(loaded, settings, model_name=settings.served_model_name or record.name,
          adapters=AdapterCatalog(store, record.name))


def _recommended(store, record, settings, engine, config, given):
    """A search's serving recommendation for this variant on this machine (its engine, threads, batching and
    engine options) where the command line and the settings file leave them open; the options come back by
    engine name, to go under any the user gives."""
    from slipstream.cli.output import err
    from slipstream.engines.loading import engines_for
    from slipstream.models.tasks import task_of

    rec = store.recommendation(record.name)
    if rec is None:
        return settings, engine, {}
    explicit = set(given)  # the command line's options and assignments
    if config is not None:
        import yaml

        explicit |= set((yaml.safe_load(Path(config).read_text()) or {}).keys())
    used = []
    if engine is None and rec.get("engine") in engines_for(record.format, task_of(record)):
        engine = rec["engine"]
        used.append(f"engine {engine}")
    update = {}
    if settings.threads is None and "threads" not in explicit and rec.get("threads"):
        update["threads"] = rec["threads"]
        used.append(f"{rec['threads']} thread(s)")
    if settings.batching == "auto" and "batching" not in explicit and rec.get("batching"):
        update["batching"] = rec["batching"]
        used.append(f"{rec['batching']} batching")
    options = {}
    if rec.get("engine_options") and (engine or rec.get("engine")) == rec.get("engine"):
        options = {rec["engine"]: dict(rec["engine_options"])}
        used.append(" ".join(f"{k}={v}" for k, v in rec["engine_options"].items()))
    if used:
        err.print(f"using the serving settings search {rec['source'].get('search')} measured fastest here: "
                  f"{', '.join(used)} (give --threads, --engine, --batching or --engine-option to choose "
                  "otherwise)", highlight=False)
    return settings.model_copy(update=update), engine, options
