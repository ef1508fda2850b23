"""API keys: ``Authorization: Bearer KEY`` on every route but /health, when keys are configured."""

from __future__ import annotations

import hmac
from typing import Callable, Sequence

from fastapi import Request

from slipstream.serving.errors import unauthorized


def key_checker(keys: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency refusing requests without one of ``keys`` (a no-op when there are none)."""
    accepted = [k.encode() for k in keys if k]

    def check(request: Request) -> None:
        if not accepted:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer KEY'.")
        given = token.strip().encode()
        # compare with every key, in constant time, so timing does not tell which prefix matched
        if not any([hmac.compare_digest(given, k) for k in accepted]):
            raise unauthorized("Incorrect API key provided.")

    return check
