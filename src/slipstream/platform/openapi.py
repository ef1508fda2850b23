"""The platform's OpenAPI schema, true to what it answers: 400 (never FastAPI's 422) naming the field, 401
when keys are set, 404 on unknown ids, 409 on conflicting actions, 202 for a new job, server-sent events for
/events and plain text for /log; every error in the ``{"error": {message, type, param, code}}`` shape.

The routes declare their answers (``responses=`` from here); :func:`schema` drops FastAPI's 422 and adds
auth (slipstream.serving.openapi.errors_only). tests/platform/test_fuzz.py fuzzes the service against it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from slipstream.serving.openapi import errors_only
from slipstream.serving.protocol import ErrorResponse


def error(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": description}}


INVALID = error(400, "The body or a query parameter is invalid (error.param names the field)")
NOT_FOUND = error(404, "No such model or job (code model_not_found or job_not_found)")
CONFLICT = error(409, "The action conflicts with the model's or the job's state (code conflict)")
# one server-sent event: `id: N` and `data: EVENT` as JSON (a "message"), or the closing `event: end`, `data: {}`
EVENT: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {
    "id": {"type": "string"}, "event": {"enum": ["message", "end"]},
    "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"type": "object"}}}}
EVENTS = {200: {"description": "Server-sent events: every event after `after`, then new ones until the job "
                               "ends, then `event: end`",
                "content": {"text/event-stream": {"schema": EVENT}}}}
LOG = {200: {"description": "The job's log so far (empty before it starts)",
             "content": {"text/plain": {"schema": {"type": "string"}}}}}


def schema(app: FastAPI, *, keyed: bool) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if not app.openapi_schema:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        errors_only(doc, keyed=keyed)
        for operations in doc["paths"].values():
            for op in operations.values():
                for status, response in op["responses"].items():
                    if status >= "400":  # FastAPI files them under the route's media type; they are JSON
                        response["content"] = {"application/json": {"schema": {
                            "$ref": "#/components/schemas/ErrorResponse"}}}
        app.openapi_schema = doc
    return app.openapi_schema
