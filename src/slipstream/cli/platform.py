"""``slipstream platform``: the team's service, a REST API over the store, jobs and deployments."""

from __future__ import annotations

from typing import List, Optional

import typer


def platform_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
    port: int = typer.Option(8080, "--port", help="Port (0 picks a free one)"),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="Accept this key (repeatable)"),
    workers: int = typer.Option(1, "--workers", help="Jobs running at once, each in its own process"),
    deploy_runtime: str = typer.Option("process", "--deploy-runtime",
                                       help="How a deployment runs unless it says: process (one `slipstream "
                                            "serve`) or ray (`slipstream deploy` on Ray Serve)"),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated",
                                               help="Listen beyond loopback with no API key"),
) -> None:
    """Serve the platform (REST API under /api/v1: models, jobs, deployments; web UI at /ui/) on the store."""
    import uvicorn

    from slipstream.platform.app import create_platform_app
    from slipstream.platform.settings import PlatformSettings
    from slipstream.serving.auth import check_exposure
    from slipstream.serving.server import bind
    from slipstream.store import Store

    from pydantic import ValidationError

    from slipstream.errors import InvalidConfig
    from slipstream.serving.settings import describe

    try:
        settings = PlatformSettings(host=host, port=port, api_keys=list(api_key or []), max_workers=workers,
                                    deploy_runtime=deploy_runtime)
    except ValidationError as exc:
        raise InvalidConfig(f"invalid platform settings: {describe(exc)}") from None
    check_exposure(settings.host, settings.api_keys, allow_unauthenticated)
    store = Store()
    app = create_platform_app(store, settings)
    sock = bind(settings.host, settings.port)
    h, p = sock.getsockname()[:2]
    typer.echo(f"slipstream platform: listening on http://{h}:{p} (store {store.home}, {workers} worker(s))")
    typer.echo(f"  web UI     http://{h}:{p}/ui/")
    typer.echo(f"  api        http://{h}:{p}/api/v1/models  /api/v1/jobs  /api/v1/deployments  "
               f"schema /api/v1/openapi.json")
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
