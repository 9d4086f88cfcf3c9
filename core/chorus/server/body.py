"""Request bodies at the HTTP edge: size caps, content types, and clients that leave mid-body.

* :func:`read_body` reads a whole body with the limits of Litestar's ``Request.body()``: an
  announced ``content-length`` over the limit and a body that grows over it are both 413. A client
  that disconnects before its body is complete raises :class:`ClientGone`, which the app answers
  (to nobody) with a 499 and logs at INFO: a client leaving is not a server error.
* :func:`check_json_type`: JSON endpoints answer 415 ``unsupported_media_type`` to a
  ``Content-Type`` that is not JSON (``application/json``, or any ``+json`` type). A request
  without a ``Content-Type`` is read as JSON, as curl users expect.
* :func:`json_body` does both for a Litestar route.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Request
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from chorus.contract.errors import UnsupportedMediaType

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class ClientGone(Exception):
    """The client disconnected before its answer was ready (the ``str`` says when)."""


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` value names JSON (parameters such as ``charset`` are ignored)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json_type(content_type: str | None) -> None:
    """A 415 unless the request says nothing about its type or says JSON."""
    if content_type is not None and content_type != "application/json" and not is_json(content_type):
        media = content_type.partition(";")[0].strip()[:100]
        raise UnsupportedMediaType(f"This endpoint reads application/json, not {media!r}.")


async def read_body(receive: Receive, content_length: str | None, limit: int | None) -> bytes:
    """The whole request body, with the limits and errors of Litestar's ``Request.body()``."""
    maximum: float = limit or math.inf
    if content_length is not None:
        try:
            announced = int(content_length)
        except ValueError:
            raise ClientException(f"Invalid content-length: {content_length!r}") from None
        if announced > maximum:
            raise RequestEntityTooLarge
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message["body"]
            if chunk:
                total += len(chunk)
                if total > maximum:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if kind == "http.disconnect":
            raise ClientGone("while sending its request body")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def json_body(request: Request[Any, Any, Any]) -> bytes:
    """The body of a JSON endpoint's request: type checked, size capped (``server.max_body_bytes``)."""
    headers = request.headers
    check_json_type(headers.get("content-type"))
    return await read_body(request.receive, headers.get("content-length"), request.app.state.max_body_bytes)
