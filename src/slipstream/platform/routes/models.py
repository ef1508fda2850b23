"""/api/v1/models: what the store holds, each variant with its lineage, technique, size and figures."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel

from slipstream.platform.openapi import CONFLICT, NOT_FOUND
from slipstream.platform.routes.common import conflict, not_found, platform

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class ModelSummary(BaseModel):
    name: str
    kind: str
    format: str
    architecture: Optional[str]
    parameters: Optional[int]
    size_bytes: int
    parent: Optional[str]
    technique: Optional[dict[str, Any]]
    created: str


class ModelList(BaseModel):
    data: list[ModelSummary]


class Result(BaseModel):
    kind: str
    key: str
    settings: dict[str, Any]
    metrics: dict[str, Any]
    machine: dict[str, Any]
    created: str


class ModelDetail(ModelSummary):
    lineage: list[str]
    children: list[str]
    results: list[Result]


class Deleted(BaseModel):
    deleted: str


def summary(v: Any) -> dict[str, Any]:
    return {"name": v.name, "kind": v.kind, "format": v.format, "architecture": v.architecture,
            "parameters": v.parameters, "size_bytes": v.size_bytes, "parent": v.parent, "technique": v.technique,
            "created": v.created}


@router.get("", response_model=ModelList)
async def list_models(request: Request) -> dict:
    store = platform(request).store
    return {"data": [summary(v) for v in store.list()]}


@router.get("/{name}", response_model=ModelDetail, responses=NOT_FOUND)
async def show_model(name: str, request: Request) -> dict:
    store = platform(request).store
    if not store.exists(name):
        raise not_found("model", name)
    v = store.get(name)
    lineage, parent = [], v.parent
    while parent and store.exists(parent):  # the chain back to the imported model
        lineage.append(parent)
        parent = store.get(parent).parent
    results = [{"kind": r.kind, "key": r.key, "settings": r.settings, "metrics": r.metrics,
                "machine": r.machine, "created": r.created} for r in store.results(name)]
    return {**summary(v), "lineage": lineage, "children": [c.name for c in store.children(name)],
            "results": results}


@router.delete("/{name}", response_model=Deleted, responses={**NOT_FOUND, **CONFLICT})
async def delete_model(name: str, request: Request) -> dict:
    st = platform(request)
    if not st.store.exists(name):
        raise not_found("model", name)
    children = st.store.children(name)
    if children:
        raise conflict(f"cannot delete {name!r}: variants derive from it ({', '.join(c.name for c in children)})")
    busy = st.jobs.using(name)
    if busy:
        raise conflict(f"cannot delete {name!r}: job {busy[0]} uses it")
    st.store.remove(name)
    return {"deleted": name}
