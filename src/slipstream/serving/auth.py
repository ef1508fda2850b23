"""API keys: ``Authorization: Bearer KEY`` on every route but /health, when keys are configured; and the
check that a server reachable beyond this machine has keys (or was explicitly allowed not to).

Keys never leave this module in any form a client or a log can read: errors say only that a key is
missing or wrong, and the settings' summary and the banner give their count (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Callable, Sequence

from fastapi import Request

from slipstream.errors import InvalidConfig
from slipstream.serving.errors import unauthorized


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def key_checker(keys: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency refusing requests without one of ``keys`` (a no-op when there are none)."""
    # Compared as sha256 digests: equal lengths, so compare_digest's time tells nothing of a key's length
    # either; the keys themselves are not kept here.
    accepted = [_digest(k.encode()) for k in keys if k]

    def check(request: Request) -> None:
        if not accepted:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer KEY'.")
        given = _digest(token.strip().encode())
        # compare with every key (a list, not a generator: no early exit), in constant time, so timing does
        # not tell which key, or which prefix, matched
        if not any([hmac.compare_digest(given, k) for k in accepted]):
            raise unauthorized("Incorrect API key provided.")

    return check


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine: ``localhost``, 127.0.0.0/8, ``::1`` (an IPv4-mapped
    loopback too). Any other name counts as reachable: it may resolve to anything."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def check_exposure(host: str, api_keys: list[str], allow_unauthenticated: bool) -> None:
    """Refuse to listen on ``host`` beyond loopback with no API key, unless ``allow_unauthenticated`` says
    that is meant (a private network, or a proxy in front that authenticates): a model server open to
    whoever reaches it is an easy mistake to make by copying ``--host 0.0.0.0`` from an example."""
    if allow_unauthenticated or any(k for k in api_keys) or is_loopback(host):
        return
    where = repr(host) if host else "every interface ('')"
    raise InvalidConfig(
        f"refusing to listen on {where} without an API key: anyone who can reach it could use the model. "
        "Give a key (--api-key KEY, or api_keys in the settings), listen on 127.0.0.1, or pass "
        "--allow-unauthenticated if the network is private or a proxy in front authenticates")
