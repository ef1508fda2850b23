"""GET /health (never needs a key), /v1/models and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from slipstream.serving.metrics import CONTENT_TYPE
from slipstream.serving.protocol import Health, ModelCard, ModelList
from slipstream.serving.routes.common import adapter_names, server

public = APIRouter()
router = APIRouter()


@public.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "The server is shutting down"}})
async def health(request: Request) -> JSONResponse:
    st = server(request)
    alive = st.scheduler.alive
    return JSONResponse({"status": "ok" if alive else "stopping", "model": st.model_name,
                         "queue_depth": st.scheduler.queue_depth, "running": len(st.scheduler.running)},
                        status_code=200 if alive else 503)


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request) -> dict:
    st = server(request)
    card = ModelCard(id=st.model_name, created=st.created, root=st.model_name, max_model_len=st.engine.max_context)
    adapters = [ModelCard(id=a, created=st.created, root=a, parent=st.model_name,
                          max_model_len=st.engine.max_context) for a in adapter_names(st)]
    return ModelList(data=[card, *adapters]).model_dump()


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    return Response(server(request).metrics.render(), media_type=CONTENT_TYPE)
