"""What the platform's routes share: the service state and its errors."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from slipstream.serving.errors import ApiError, bad_request


def platform(request: Request) -> Any:
    return request.app.state.platform


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"no {what} named {name!r}", type="not_found_error", code=f"{what}_not_found")


def conflict(message: str) -> ApiError:
    return ApiError(409, message, type="conflict_error", code="conflict")


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (a misspelt ``limit`` is an error, not ignored), as
    unknown body keys are."""
    route = request.scope.get("route")
    taken = {p.alias for p in getattr(getattr(route, "dependant", None), "query_params", [])}
    for name in request.query_params:
        if name not in taken:
            raise bad_request(f"unknown query parameter {name!r}" + (f"; this route takes {', '.join(sorted(taken))}"
                                                                     if taken else ""), name)
