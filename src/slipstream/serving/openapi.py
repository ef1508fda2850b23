"""The server's OpenAPI schema, true to what it answers: 400 (never FastAPI's default 422), 401 only when keys
are configured, 404, 413, 429 with Retry-After, 500, 503, and 200 as JSON or as server-sent events.

``schema(app, keyed=...)`` builds it once from the routes' ``responses=`` (declared here, beside the
routes' use of them) and is what ``GET /openapi.json`` returns; schemathesis fuzzes the server against it
(tests/serving/test_fuzz.py), so a status code the server answers but the schema does not name fails there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from slipstream.serving.protocol import ChatCompletionChunk, CompletionChunk, ErrorResponse
from slipstream.serving.settings import SamplingLimits

_ERROR: dict[str, Any] = {"model": ErrorResponse}

# what every generation route answers besides 200 (and 401, added by schema() when keys are set)
GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "The request is invalid or asks for more than this deployment allows "
                                   "(error.param names the field)"},
    404: {**_ERROR, "description": "The model asked for is not the one served here (code model_not_found)"},
    413: {**_ERROR, "description": "The body is larger than max_body_bytes"},
    429: {**_ERROR, "description": "The queue is full (max_queue requests or max_queued_tokens tokens); retry "
                                   "after Retry-After seconds",
          "headers": {"Retry-After": {"required": True, "description": "Seconds to wait before retrying",
                                      "schema": {"type": "string"}}}},
    500: {**_ERROR, "description": "The engine failed while running this request's batch"},
    503: {**_ERROR, "description": "Cancelled: the request ran past deadline_s (code deadline_exceeded), or the "
                                   "server is shutting down"},
}


def embedding_responses() -> dict[int | str, dict[str, Any]]:
    """``responses=`` of POST /v1/embeddings."""
    return {**GENERATION_ERRORS,
            429: {**GENERATION_ERRORS[429], "description": "The queue is full (max_queue inputs or max_queued_tokens "
                                                           "tokens); retry after Retry-After seconds"}}


@dataclass(frozen=True)
class EmbeddingBounds:
    """What an embedding server takes, written into its request schema."""

    max_inputs: int  # inputs in one request (max_batch_size plus max_queue)
    max_tokens: int  # tokens in one input (the model's context)
    dimensions: int  # the model's
    matryoshka: bool  # whether fewer dimensions may be asked for


def _event(chunk: type) -> dict[str, Any]:
    """One server-sent event of a stream (OpenAPI before 3.2 describes a stream by its events): its data is a
    ``chunk`` as JSON, an error body (a failure after the response started), or the closing ``[DONE]``."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    return {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": "application/json",
         "contentSchema": {"anyOf": [ref(chunk.__name__), ref(ErrorResponse.__name__)]}}]}}}


def generation_responses(model: type, chunk: type) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a generation route whose whole answer is ``model``, streamed as ``chunk``s."""
    return {200: {"model": model, "description": "The whole answer; with stream=true, server-sent events: "
                                                 "data: CHUNK per delta, then data: [DONE]",
                  "content": {"text/event-stream": {"schema": _event(chunk)}}},
            **GENERATION_ERRORS}


def _cap(properties: dict[str, Any], name: str, most: float, key: str = "maximum") -> None:
    """Bound a request field's number (or list, key="maxItems") by a deployment limit, in every branch it has."""
    prop = properties.get(name, {})
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") in (("array",) if key == "maxItems" else ("integer", "number")):
            branch[key] = most


def _integers(node: Any, most: int) -> None:
    """Every integer in a schema fragment at most ``most`` (token ids: the vocabulary)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node["maximum"] = most
        for value in node.values():
            _integers(value, most)
    elif isinstance(node, list):
        for value in node:
            _integers(value, most)


def _limits(schemas: dict[str, Any], limits: SamplingLimits, vocab_size: int) -> None:
    """The deployment's limits written into the request schemas: what a client may ask for, said up front."""
    _integers(schemas.get("CompletionRequest", {}).get("properties", {}).get("prompt"), vocab_size - 1)
    for name, logprobs in (("CompletionRequest", "logprobs"), ("ChatCompletionRequest", "top_logprobs")):
        props = schemas.get(name, {}).get("properties", {})
        for field in ("max_tokens", "max_completion_tokens"):
            _cap(props, field, limits.max_tokens)
        _cap(props, "n", limits.max_n)
        _cap(props, "temperature", limits.max_temperature)
        _cap(props, logprobs, limits.max_logprobs)
        _cap(props, "stop", limits.max_stop, "maxItems")
        if limits.max_top_k:
            _cap(props, "top_k", limits.max_top_k)


def _embedding_limits(schemas: dict[str, Any], bounds: EmbeddingBounds, vocab_size: int) -> None:
    props = schemas.get("EmbeddingRequest", {}).get("properties", {})
    if not props:
        return
    _integers(props.get("input"), vocab_size - 1)
    for branch in props["input"].get("anyOf", []):
        if branch.get("type") != "array":
            continue
        items = branch.get("items", {})
        # token ids of one input, or a list of inputs (texts, or token ids of each)
        branch["maxItems"] = bounds.max_tokens if items.get("type") == "integer" else bounds.max_inputs
        if items.get("type") == "array":
            items["maxItems"] = bounds.max_tokens
    _cap(props, "dimensions", bounds.dimensions)
    if not bounds.matryoshka:
        _cap(props, "dimensions", bounds.dimensions, "minimum")


def errors_only(doc: dict[str, Any], *, keyed: bool, open_paths: tuple[str, ...] = ("/health",)) -> None:
    """What every slipstream service's schema says of errors: no 422 (invalid input is answered 400 in the
    ``{"error": ...}`` shape, app.error_handlers), and, when ``keyed``, bearer auth and 401 on every route
    but ``open_paths``."""
    for path, operations in doc.get("paths", {}).items():
        for op in operations.values():
            op["responses"].pop("422", None)  # invalid bodies are answered 400 (app.error_handlers)
            if keyed and path not in open_paths:
                op["security"] = [{"bearer": []}]
                op["responses"]["401"] = {"description": "No API key, or a wrong one",
                                          "content": {"application/json": {"schema": {
                                              "$ref": "#/components/schemas/ErrorResponse"}}}}
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if ErrorResponse.__name__ not in schemas:  # the 401's body, when no route names it
        definition = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[ErrorResponse.__name__] = definition
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if keyed:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}


def schema(app: FastAPI, *, keyed: bool, limits: SamplingLimits, vocab_size: int,
           embeddings: EmbeddingBounds | None = None) -> dict[str, Any]:
    """The app's OpenAPI document (built once): FastAPI's, less its 422 entries, with the deployment's
    ``limits`` (an embedding server's ``embeddings``) and the model's vocabulary on the request fields, plus
    bearer auth when ``keyed``."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    errors_only(doc, keyed=keyed)
    for operations in doc.get("paths", {}).values():
        for op in operations.values():
            # past max_connections uvicorn answers before the app sees the request, in its own words
            busy = op["responses"].setdefault("503", {"description": "The server is busy or shutting down"})
            busy["description"] += "; or more than max_connections connections are open (plain text)"
            busy.setdefault("content", {})["text/plain"] = {"schema": {"type": "string"}}
    schemas = doc["components"]["schemas"]
    for chunk in (CompletionChunk, ChatCompletionChunk):  # referenced from the event schemas only
        definition = chunk.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[chunk.__name__] = definition
    _limits(schemas, limits, vocab_size)
    if embeddings is not None:
        _embedding_limits(schemas, embeddings, vocab_size)
    app.openapi_schema = doc
    return doc
