"""Request ids: one per HTTP request, sent back as ``x-request-id`` on every response."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

SCOPE_KEY = "chorus.request_id"
_BATCH = 256  # ids drawn per os.urandom call
_ids: deque[str] = deque()


def _refill() -> str:
    """Draw a batch of ids from the OS CSPRNG (one syscall instead of one per request)."""
    raw = os.urandom(12 * _BATCH).hex()
    _ids.extend(["req_" + raw[i : i + 24] for i in range(24, len(raw), 24)])
    return "req_" + raw[:24]


def new_request_id() -> str:
    """``req_`` and 24 hex digits: 96 bits from ``os.urandom``, as ``secrets.token_hex(12)`` gives.

    Ids are drawn in batches; ``deque.popleft`` is atomic, so threads never share one, and a forked
    child drops the parent's unused ids (:func:`os.register_at_fork`).
    """
    try:
        return _ids.popleft()
    except IndexError:
        return _refill()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.clear)


def request_id(scope: Any) -> str:
    """The request id of this ASGI scope, created on first use."""
    rid: str | None = scope.get(SCOPE_KEY)
    if rid is None:
        rid = scope[SCOPE_KEY] = new_request_id()
    return rid


async def add_request_id_header(message: Any, scope: Any) -> None:
    """Litestar ``before_send`` hook: put ``x-request-id`` on every HTTP response."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers") or ())
        headers.append((b"x-request-id", request_id(scope).encode()))
        message["headers"] = headers
