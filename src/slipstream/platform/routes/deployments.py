"""/api/v1/deployments: run a deployment spec (or GALE's deploy body), watch its state and figures, update it,
stop it, and talk to it (the web UI's chat box goes through ``/chat``: no key in the page, no CORS)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Literal, Optional

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from slipstream.errors import InvalidConfig
from slipstream.platform.deployments import shown_spec
from slipstream.platform.openapi import CONFLICT, INVALID, NOT_FOUND, error
from slipstream.platform.routes.common import conflict, not_found, platform
from slipstream.serving.errors import ApiError, bad_request

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])

State = Literal["deploying", "ready", "failed", "stopping", "stopped"]
Runtime = Literal["process", "ray"]
UNREACHABLE = error(502, "The deployment's endpoint did not answer")
# the endpoint's own refusals, passed on as it gave them (with its Retry-After)
BUSY = {**error(429, "The deployment is full (its queue bound); retry after Retry-After"),
        **error(503, "The deployment is shutting down, or the request passed its deadline")}


class NewDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="slipstream's deployment spec, or GALE's deploy body (camelCase)")
    runtime: Optional[Runtime] = Field(None, description="process (one `slipstream serve`) or ray "
                                                         "(`slipstream deploy` on Ray Serve); default: the "
                                                         "platform's")
    name: Optional[str] = Field(None, max_length=200)


class UpdatedDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]


class Deployment(BaseModel):
    id: str
    name: str
    runtime: Runtime
    state: State
    url: Optional[str]
    models: list[str]
    spec: dict[str, Any]
    error: Optional[str]
    created: str
    updated: str
    pid: Optional[int]


class DeploymentList(BaseModel):
    data: list[Deployment]


class Figures(BaseModel):
    requests: float
    output_tokens: float
    prompt_tokens: float
    rejected: float
    tokens_per_s: Optional[float]
    mean_ttft_s: Optional[float]
    mean_request_s: Optional[float]
    replicas: Optional[int]
    state: State


def view(row: Any) -> dict[str, Any]:
    d = asdict(row)
    d["models"] = [m["name"] for m in row.spec.get("models", [])]
    d["spec"] = shown_spec(row.spec)
    return d


def _row(request: Request, dep_id: str) -> Any:
    row = platform(request).store.registry.get_deployment(dep_id)
    if row is None:
        raise not_found("deployment", dep_id)
    return row


@router.post("", status_code=202, response_model=Deployment, responses=INVALID)
async def create_deployment(body: NewDeployment, request: Request) -> dict:
    st = platform(request)
    try:
        row = await asyncio.to_thread(st.deployer.create, body.spec, body.runtime, body.name)
    except InvalidConfig as exc:
        raise bad_request(str(exc), "spec") from None
    return view(row)


@router.get("", response_model=DeploymentList, responses=INVALID)
async def list_deployments(request: Request, state: Optional[State] = None,
                           limit: int = Query(100, ge=1, le=10_000)) -> dict:
    rows = await asyncio.to_thread(platform(request).store.registry.deployments, state, limit)
    return {"data": [view(r) for r in rows]}


@router.get("/{dep_id}", response_model=Deployment, responses=NOT_FOUND)
async def show_deployment(dep_id: str, request: Request) -> dict:
    return view(_row(request, dep_id))


@router.put("/{dep_id}", status_code=202, response_model=Deployment, responses={**INVALID, **NOT_FOUND, **CONFLICT})
async def update_deployment(dep_id: str, body: UpdatedDeployment, request: Request) -> dict:
    row = _row(request, dep_id)
    if row.state in ("stopping", "stopped"):
        raise conflict(f"deployment {dep_id} is {row.state}: create a new one")
    try:
        row = await asyncio.to_thread(platform(request).deployer.update, dep_id, body.spec)
    except InvalidConfig as exc:
        raise bad_request(str(exc), "spec") from None
    return view(row)


@router.delete("/{dep_id}", response_model=Deployment, responses={**NOT_FOUND, **CONFLICT})
async def delete_deployment(dep_id: str, request: Request) -> dict:
    row = _row(request, dep_id)
    if row.state == "stopped":
        raise conflict(f"deployment {dep_id} is already stopped")
    return view(await asyncio.to_thread(platform(request).deployer.delete, dep_id))


def _ready(request: Request, dep_id: str) -> Any:
    row = _row(request, dep_id)
    if row.state != "ready":
        raise conflict(f"deployment {dep_id} is {row.state}, not ready")
    return row


@router.get("/{dep_id}/figures", response_model=Figures, responses={**NOT_FOUND, **CONFLICT, **UNREACHABLE})
async def deployment_figures(dep_id: str, request: Request) -> dict:
    """Totals from the deployment's own /metrics (over its replicas), and output tokens/s since the last read."""
    row = _ready(request, dep_id)
    try:
        figures = await platform(request).deployer.figures(row)
    except httpx.HTTPError as exc:
        raise ApiError(502, f"the deployment's /metrics did not answer: {exc}", type="upstream_error",
                       code="deployment_unreachable") from None
    return {**figures, "state": row.state}


@router.post("/{dep_id}/chat", responses={**INVALID, **NOT_FOUND, **CONFLICT, **BUSY, **UNREACHABLE})
async def deployment_chat(dep_id: str, body: dict[str, Any], request: Request) -> JSONResponse:
    """An OpenAI chat completion from the deployment (``model`` defaults to its first model; no streaming)."""
    row = _ready(request, dep_id)
    if body.get("stream"):
        raise bad_request("this route does not stream; call the endpoint itself for a stream", "stream")
    deployer = platform(request).deployer
    payload = {"model": row.spec["models"][0]["name"], **body}
    try:
        async with httpx.AsyncClient(timeout=300) as client:
            r = await client.post(deployer.base_url(row) + "/v1/chat/completions", json=payload,
                                  headers=deployer.headers(row))
    except httpx.HTTPError as exc:
        raise ApiError(502, f"the deployment did not answer: {exc}", type="upstream_error",
                       code="deployment_unreachable") from None
    try:
        content = r.json()
    except ValueError:
        raise ApiError(502, f"the deployment answered {r.status_code} without JSON", type="upstream_error",
                       code="deployment_unreachable") from None
    retry = {"Retry-After": r.headers["retry-after"]} if "retry-after" in r.headers else None
    return JSONResponse(content, status_code=r.status_code, headers=retry)
