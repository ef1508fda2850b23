"""The platform's FastAPI app: the store, the job runner, the routes, keys, errors, its OpenAPI schema."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from slipstream.platform import openapi
from slipstream.platform.deployments import Deployer
from slipstream.platform.jobs import Runner
from slipstream.platform.routes.common import known_query
from slipstream.platform.settings import PlatformSettings
from slipstream.serving.app import error_handlers
from slipstream.serving.auth import key_checker
from slipstream.store import Store


class Health(BaseModel):
    status: str
    jobs_running: int


@dataclass
class PlatformState:
    store: Store
    settings: PlatformSettings
    jobs: Runner
    deployer: Deployer


def create_platform_app(store: Store, settings: PlatformSettings) -> FastAPI:
    from slipstream.platform.routes import deployments, jobs, models, ui

    runner = Runner(store, settings.max_workers)
    deployer = Deployer(store, settings.deploy_runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        deployer.start()
        try:
            yield
        finally:
            runner.stop()
            deployer.stop()

    # FastAPI's own schema route would be open to all: it is served below, behind the key
    app = FastAPI(title="slipstream platform", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.platform = PlatformState(store, settings, runner, deployer)
    guarded = [Depends(key_checker(settings.api_keys))]
    checked = [*guarded, Depends(known_query)]

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "jobs_running": sum(p.poll() is None for p in list(runner.procs.values()))}

    app.include_router(models.router, dependencies=checked)
    app.include_router(jobs.router, dependencies=checked)
    app.include_router(deployments.router, dependencies=checked)
    app.include_router(ui.router)
    keyed = any(k for k in settings.api_keys)

    @app.get("/api/v1/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(openapi.schema(app, keyed=keyed))

    error_handlers(app, max_body_bytes=settings.upload_limit_mb << 20)
    return app
