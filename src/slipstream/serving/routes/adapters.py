"""/v1/adapters: the LoRA adapters a server serves over its model; load and unload them at run time.

Behind the API key like every other route. A load reads and checks the adapter (its base, its modules and
shapes) on the engine's thread between steps; one that does not fit is refused with a 400 and the server
goes on serving. An unload waits for nothing: it is refused (409) while a request uses the adapter.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from slipstream.errors import SlipstreamError
from slipstream.serving.errors import ApiError, bad_request
from slipstream.serving.protocol import ErrorResponse
from slipstream.serving.routes.common import server

router = APIRouter()
_REFUSED = {400: {"model": ErrorResponse, "description": "Not an adapter of this model, or it does not fit it "
                                                         "(error.message says how)"}}
_UNKNOWN = {404: {"model": ErrorResponse, "description": "No adapter of that name is loaded"},
            409: {"model": ErrorResponse, "description": "A request uses the adapter (code adapter_in_use)"}}


class AdapterLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    pinned: bool = False


class AdapterState(BaseModel):
    name: str
    parent: str
    resident: bool
    pinned: bool


class AdapterList(BaseModel):
    data: list[AdapterState]
    max_loras: Optional[int]


def _bank(request: Request):  # noqa: ANN202
    st = server(request)  # these routes are mounted only where adapters can run
    return st, st.engine.adapters(st.settings.max_loras)


def _listing(st, bank) -> dict:  # noqa: ANN001
    return {"data": [{"name": n, "parent": st.model_name, "resident": n in bank.resident, "pinned": n in bank.pinned}
                     for n in sorted(bank.paths)], "max_loras": bank.max_loras}


@router.get("/v1/adapters", response_model=AdapterList)
async def list_adapters(request: Request) -> dict:
    st, bank = _bank(request)
    return _listing(st, bank)


@router.post("/v1/adapters", response_model=AdapterList, responses=_REFUSED)
async def load_adapter(body: AdapterLoad, request: Request) -> dict:
    """Load (or re-pin) an adapter from the store; it answers requests from the next step on."""
    st, bank = _bank(request)
    try:
        path = st.adapters.resolve(body.name)
    except SlipstreamError as exc:
        raise bad_request(str(exc), "name") from None

    def load() -> None:
        if body.name in bank.paths:
            bank.pin(body.name, body.pinned)
        else:
            bank.register(body.name, path, pinned=body.pinned)

    try:
        await asyncio.wrap_future(st.scheduler.call(load))
    except (SlipstreamError, ValueError, OSError, KeyError) as exc:
        raise bad_request(f"adapter {body.name!r} not loaded: {exc}", "name") from None
    return _listing(st, bank)


@router.delete("/v1/adapters/{name}", response_model=AdapterList, responses=_UNKNOWN)
async def unload_adapter(name: str, request: Request) -> dict:
    st, bank = _bank(request)
    if name not in bank.paths:
        raise ApiError(404, f"no adapter {name!r} is loaded", type="not_found_error", param="name",
                       code="adapter_not_found")
    try:
        await asyncio.wrap_future(st.scheduler.call(lambda: bank.unregister(name)))
    except RuntimeError as exc:
        raise ApiError(409, str(exc), type="conflict_error", code="adapter_in_use") from None
    return _listing(st, bank)
