"""/api/v1/jobs: start an import, optimization, evaluation or benchmark; watch it; cancel it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any, AsyncIterator, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from slipstream.errors import InvalidConfig
from slipstream.platform.openapi import CONFLICT, EVENTS, INVALID, LOG, NOT_FOUND
from slipstream.platform.routes.common import conflict, not_found, platform
from slipstream.serving.errors import bad_request

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

FINAL = ("succeeded", "failed", "cancelled")


class NewJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="import, optimize, evaluate or bench")
    spec: dict[str, Any] = Field(default_factory=dict)


State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Job(BaseModel):
    id: str
    kind: str
    spec: dict[str, Any]
    state: State
    progress: Optional[dict[str, Any]]
    result: Optional[dict[str, Any]]
    error: Optional[str]
    created: str
    updated: str
    started: Optional[str]
    finished: Optional[str]
    pid: Optional[int]
    attempts: int
    worker: Optional[str]


class JobList(BaseModel):
    data: list[Job]


def view(job: Any) -> dict[str, Any]:
    return asdict(job)


def _job(request: Request, job_id: str) -> Any:
    job = platform(request).store.registry.get_job(job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


@router.post("", status_code=202, response_model=Job, responses=INVALID)
async def create_job(body: NewJob, request: Request) -> dict:
    st = platform(request)
    try:
        job = st.jobs.submit(body.kind, body.spec)
    except InvalidConfig as exc:
        raise bad_request(str(exc), "spec") from None
    return view(job)


@router.get("", response_model=JobList, responses=INVALID)
async def list_jobs(request: Request, state: Optional[State] = None,
                    limit: int = Query(100, ge=1, le=10_000)) -> dict:
    return {"data": [view(j) for j in platform(request).store.registry.jobs(state=state, limit=limit)]}


@router.get("/{job_id}", response_model=Job, responses=NOT_FOUND)
async def show_job(job_id: str, request: Request) -> dict:
    return view(_job(request, job_id))


@router.post("/{job_id}/cancel", response_model=Job, responses={**NOT_FOUND, **CONFLICT})
async def cancel_job(job_id: str, request: Request) -> dict:
    job = _job(request, job_id)
    if job.state in FINAL:
        raise conflict(f"job {job_id} has already ended ({job.state})")
    return view(platform(request).jobs.cancel(job_id))


@router.get("/{job_id}/log", response_class=PlainTextResponse, responses={**LOG, **NOT_FOUND})
async def job_log(job_id: str, request: Request) -> PlainTextResponse:
    _job(request, job_id)
    path = platform(request).store.home / "jobs" / f"{job_id}.log"
    return PlainTextResponse(path.read_text(errors="replace") if path.exists() else "")


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={**EVENTS, **INVALID, **NOT_FOUND})
async def job_events(job_id: str, request: Request, after: int = Query(0, ge=0, le=2**62)) -> StreamingResponse:
    """Server-sent events: every event after ``after``, then new ones as they come, until the job ends."""
    _job(request, job_id)
    registry = platform(request).store.registry

    async def frames() -> AsyncIterator[str]:
        last = after
        while True:
            for e in await asyncio.to_thread(registry.job_events, job_id, last):
                last = e["id"]
                yield f"id: {e['id']}\ndata: {json.dumps(e)}\n\n"
            job = await asyncio.to_thread(registry.get_job, job_id)
            if job is None or job.state in FINAL:
                for e in await asyncio.to_thread(registry.job_events, job_id, last):
                    yield f"id: {e['id']}\ndata: {json.dumps(e)}\n\n"
                yield "event: end\ndata: {}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
