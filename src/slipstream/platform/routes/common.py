"""What the platform's routes share: the service state and its errors."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from slipstream.serving.errors import ApiError


def platform(request: Request) -> Any:
    return request.app.state.platform


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"no {what} named {name!r}", type="not_found_error", code=f"{what}_not_found")


def conflict(message: str) -> ApiError:
    return ApiError(409, message, type="conflict_error", code="conflict")
