"""Exception handlers of the HTTP edge: every failure leaves as the OpenAI error envelope.

A :class:`ChorusError` carries its own status and ``type``/``code``/``param`` (one from the 5xx
family, an upstream or state failure, is logged once at WARNING, without a traceback); Litestar's
HTTP exceptions (404 path, 405, 413) are mapped to the same envelope; a client that left is logged at
INFO; anything unexpected is logged with its traceback under the request id and answered with a 500
that names only that id.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from chorus.contract.errors import ChorusError
from chorus.server.body import ClientGone
from chorus.server.requestid import request_id

log = logging.getLogger("chorus")
_encode = msgspec.json.Encoder().encode

_HTTP_CODES = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_response(error: ChorusError) -> Response[bytes]:
    """The OpenAI error envelope with the error's status and headers."""
    return Response(
        content=_encode(error.to_dict()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers or None,
    )


def _chorus_error(request: Request[Any, Any, Any], exc: ChorusError) -> Response[bytes]:
    if exc.status_code >= 500:  # the upstream or the state failed: one line for the operator, no traceback
        log.warning("request %s: %s %s: %s", request_id(request.scope), exc.status_code, exc.code, exc.message)
    return error_response(exc)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    kind, code = _HTTP_CODES.get(exc.status_code, ("invalid_request_error", None))
    if exc.status_code >= 500:
        return _unexpected(request, exc)
    message = exc.detail or "Request failed."
    if exc.status_code == 404:
        message = f"Unknown path {request.url.path!r}."
    elif exc.status_code == 413:
        message = f"The request body is larger than this server accepts ({request.app.state.max_body_bytes} bytes)."
    return error_response(ChorusError(message, status_code=exc.status_code, error_type=kind, code=code))


def _client_gone(request: Request[Any, Any, Any], exc: ClientGone) -> Response[bytes]:
    log.info("request %s: client disconnected %s", request_id(request.scope), exc)
    return Response(content=b"", status_code=499)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    rid = request_id(request.scope)
    log.error("request %s failed: %s", rid, type(exc).__name__, exc_info=exc)
    return error_response(ChorusError(f"The server had an error processing your request (request id {rid})."))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ChorusError: _chorus_error,
    ClientGone: _client_gone,
    HTTPException: _http_error,
    Exception: _unexpected,
}
