"""The endpoint: one OpenAI API for every model of a deployment, in front of each model's replicas.

It reads a request's ``model``, hands the request (as plain data) to that model's Ray Serve deployment and
streams back what a replica's ``slipstream serve`` app answers. What belongs to the endpoint is here: API
keys, /v1/models over all models, /metrics over all replicas, and backpressure: when every replica of a
model holds ``max_ongoing_requests`` and ``max_queued_requests`` more wait here, the next request is a 429
with Retry-After at once. A replica that dies before it answered is retried once on another; one that dies
while streaming ends its stream with an error event, never a hang.
"""



import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from prometheus_client import CollectorRegistry, Counter, generate_latest

from slipstream.deploy.asgi import Forwarded, Start
from slipstream.serving.auth import key_checker
from slipstream.serving.errors import ApiError, bad_request
from slipstream.serving.metrics import CONTENT_TYPE
from slipstream.serving.settings import SamplingLimits

log = logging.getLogger("slipstream.deploy")

RETRY_AFTER_S = 1
_CARD_TTL_S = 10.0


def _not_found(name: str, known: list[str]) -> ApiError:
    return ApiError(404, f"The model '{name}' does not exist; this endpoint serves: {', '.join(known)}.",
                    type="not_found_error", param="model", code="model_not_found")


def _busy(model: str) -> ApiError:
    return ApiError(429, f"every replica of '{model}' is busy and its queue is full; retry later",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})


def _unavailable(model: str, why: str) -> ApiError:
    return ApiError(503, f"no replica of '{model}' could answer ({why}); retry later", type="server_error",
                    code="replica_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)})


def model_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid request: the body is not valid JSON", None) from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise bad_request("Invalid request: model: Field required (a string naming the model)", "model")
    return data["model"]


class EndpointHealth(BaseModel):
    status: str
    models: list[str]


class EndpointMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("slipstream_endpoint_requests", "Requests answered by the endpoint, by model, "
                                "endpoint and status", ["model", "endpoint", "status"], registry=r)
        self.retried = Counter("slipstream_endpoint_retries", "Requests retried on another replica after theirs "
                               "died before answering", ["model"], registry=r)
        self.broken = Counter("slipstream_endpoint_broken_streams", "Streams ended with an error event because "
                              "their replica died", ["model"], registry=r)


def loosest(limits: "list[SamplingLimits]") -> "SamplingLimits":
    """What the schema says a request may ask for: the most any model allows (a model allowing less answers
    400, which the schema names)."""
    from slipstream.serving.settings import SamplingLimits

    most = {f: max(getattr(lim, f) for lim in limits) for f in SamplingLimits.model_fields}
    most["max_top_k"] = 0 if any(lim.max_top_k == 0 for lim in limits) else most["max_top_k"]
    return SamplingLimits(**most)


def endpoint_schema(keyed: bool, limits: "SamplingLimits") -> "dict[str, Any]":
    """The endpoint's OpenAPI document: `slipstream serve`'s routes (a replica answers with serve's own app),
    the endpoint's /health, its errors (400, 401, 404, 413, 429 and 503 with Retry-After) named by serve's."""
    from slipstream.serving import openapi
    from slipstream.serving.routes import chat, completions, info

    doc_app = FastAPI(title="slipstream deployment", version="1", openapi_url=None)

    @doc_app.get("/health", response_model=EndpointHealth)
    async def health() -> dict:  # the endpoint's own (documented here: its routes are methods of a Serve class)
        return {}

    for router in (info.router, completions.router, chat.router):
        doc_app.include_router(router)
    return openapi.schema(doc_app, keyed=keyed, limits=limits, vocab_size=2**31)


def build_endpoint(models: "dict[str, str]", api_keys: "list[str]", max_body_bytes: int = 2_000_000,
                   limits: "SamplingLimits | None" = None, openapi: bool = True,
                   adapters: "dict[str, str] | None" = None) -> type:
    """The class Ray Serve runs the endpoint's FastAPI app in; ``models`` maps each served name to the
    Serve application holding its replicas, ``adapters`` each LoRA adapter's name to its model's (a request
    may also name ``MODEL:ADAPTER``). Its one argument is a handle to the metrics keeper."""
    from ray import serve
    from ray.exceptions import RayError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    from slipstream.serving.app import BodyLimit, error_handlers

    api = FastAPI(title="slipstream deployment", docs_url=None, redoc_url=None, openapi_url=None)
    api.add_middleware(BodyLimit, limit=max_body_bytes)  # as `serve` does: refused before it is parsed
    error_handlers(api, max_body_bytes)
    check_key = key_checker(api_keys)
    names = list(models)
    owners = dict(adapters or {})
    doc: dict[str, Any] = {}

    def owner(name: str) -> str | None:
        """The model whose replicas answer a request for ``name`` (itself, or an adapter's base)."""
        if name in models:
            return name
        if name in owners:
            return owners[name]
        base = name.partition(":")[0]
        return base if ":" in name and base in models else None

    @serve.ingress(api)
    class Endpoint:
        def __init__(self, keeper: Any) -> None:
            self.keeper = keeper
            self.handles = {name: serve.get_app_handle(app) for name, app in models.items()}
            self.metrics = EndpointMetrics()
            self.cards: dict[str, tuple[float, dict]] = {}
            self.created = int(time.time())

        @api.get("/health", response_model=EndpointHealth)
        async def health(self) -> dict:
            return {"status": "ok", "models": names}

        if openapi:
            @api.get("/openapi.json", include_in_schema=False)
            async def openapi_json(self, request: Request) -> JSONResponse:
                check_key(request)
                if not doc:
                    doc.update(endpoint_schema(any(api_keys), limits or SamplingLimits()))
                return JSONResponse(doc)

        @api.get("/v1/models")
        async def list_models(self, request: Request) -> dict:
            check_key(request)
            cards = await asyncio.gather(*(self._card(n) for n in names))
            cards += [{"id": a, "object": "model", "created": self.created, "owned_by": "slipstream", "root": a,
                       "parent": m, "max_model_len": next((c["max_model_len"] for c in cards if c["id"] == m),
                                                          None)} for a, m in sorted(owners.items())]
            return {"object": "list", "data": cards}

        @api.get("/metrics")
        async def metrics(self, request: Request) -> Response:
            check_key(request)
            replicas = await self.keeper.render.remote()
            return Response(replicas + generate_latest(self.metrics.registry), media_type=CONTENT_TYPE)

        @api.post("/v1/completions")
        async def completions(self, request: Request) -> Response:
            return await self._forward(request)

        @api.post("/v1/chat/completions")
        async def chat(self, request: Request) -> Response:
            return await self._forward(request)

        async def _card(self, name: str) -> dict:
            cached = self.cards.get(name)
            if cached is None or time.monotonic() - cached[0] > _CARD_TTL_S:
                try:
                    card = await asyncio.wait_for(self.handles[name].card.remote(), 10)
                except Exception:  # noqa: BLE001 - no replica yet: list the model without its details
                    card = {"id": name}
                cached = self.cards[name] = (time.monotonic(), card)
            card = cached[1]
            return {"id": name, "object": "model", "created": self.created, "owned_by": "slipstream",
                    "root": card.get("root", name), "parent": None, "max_model_len": card.get("max_model_len")}

        async def _forward(self, request: Request) -> Response:
            check_key(request)
            body = await request.body()
            asked = model_of(body)
            name = owner(asked)
            if name is None:
                raise _not_found(asked, names + sorted(owners))
            headers = tuple((k, v) for k, v in request.headers.raw if k.lower() != b"authorization")
            forwarded = Forwarded(request.method, request.url.path, request.url.query.encode(), headers, body)
            path = request.url.path
            for attempt in (1, 2):
                gen = self.handles[name].options(stream=True).http.remote(forwarded)
                try:
                    first = await gen.__anext__()
                except BackPressureError:
                    self._count(name, path, 429)
                    raise _busy(name) from None
                except (RayError, DeploymentUnavailableError) as exc:
                    if attempt == 1:
                        self.metrics.retried.labels(name).inc()
                        log.warning("replica of %s failed before answering (%s); retrying", name, exc)
                        continue
                    self._count(name, path, 503)
                    raise _unavailable(name, exc.__class__.__name__) from None
                except StopAsyncIteration:
                    self._count(name, path, 503)
                    raise _unavailable(name, "empty response") from None
                break
            start, head = first
            assert isinstance(start, Start)
            headers_out = {k.decode(): v.decode() for k, v in start.headers if k.lower() != b"content-length"}
            self._count(name, path, start.status)
            if headers_out.get("content-type", "").startswith("text/event-stream"):
                return StreamingResponse(self._relay(name, head, gen), status_code=start.status,
                                         headers=headers_out)
            try:
                parts = [head] + [part async for part in gen]
            except RayError as exc:
                self._count(name, path, 503)
                raise _unavailable(name, exc.__class__.__name__) from None
            return Response(b"".join(parts), status_code=start.status, headers=headers_out)

        async def _relay(self, name: str, head: bytes, gen: Any) -> AsyncIterator[bytes]:
            try:
                if head:
                    yield head
                async for part in gen:
                    yield part
            except RayError as exc:  # the replica died mid-stream: say so in the stream, as OpenAI does
                self.metrics.broken.labels(name).inc()
                err = ApiError(503, f"the replica serving this stream stopped ({exc.__class__.__name__}); "
                                    "retry the request", type="server_error", code="replica_died")
                yield f"data: {json.dumps(err.body())}\n\ndata: [DONE]\n\n".encode()
            finally:
                gen.cancel()  # the client went away (or we are done): the replica frees the slot

        def _count(self, model: str, path: str, status: int) -> None:
            self.metrics.requests.labels(model, path, str(status)).inc()

    return Endpoint
