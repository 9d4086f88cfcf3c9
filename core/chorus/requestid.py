"""Request ids: one per HTTP request, sent back as ``x-request-id`` on every response."""

from __future__ import annotations

import secrets
from typing import Any

SCOPE_KEY = "chorus.request_id"


def request_id(scope: Any) -> str:
    """The request id of this ASGI scope, created on first use."""
    rid = scope.get(SCOPE_KEY)
    if rid is None:
        rid = scope[SCOPE_KEY] = "req_" + secrets.token_hex(12)
    return rid


async def add_request_id_header(message: Any, scope: Any) -> None:
    """Litestar ``before_send`` hook: put ``x-request-id`` on every HTTP response."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers") or ())
        headers.append((b"x-request-id", request_id(scope).encode()))
        message["headers"] = headers
