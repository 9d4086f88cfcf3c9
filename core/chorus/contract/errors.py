"""Errors with an OpenAI-shaped envelope.

Every failure a client can see is a :class:`ChorusError`: it carries the HTTP status and the
``type``/``code``/``param`` of the OpenAI error object. Messages never include secrets or
stack traces; upstream bodies are reduced to their ``message``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChorusError(Exception):
    """Base class for errors that become an OpenAI error response."""

    # class defaults, overridden per subclass or per instance (``status_code=``, ``error_type=``)
    status_code: int = 500
    error_type: str = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.headers = headers or {}
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ChorusError):
    """The request body or a parameter is malformed (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(ChorusError):
    """Missing or unknown API key (401)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class NotFound(ChorusError):
    """The addressed object does not exist *for this workspace* (404)."""

    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFound(NotFound):
    """The ``model`` selector names nothing this key may use (404, ``model_not_found``)."""

    default_code = "model_not_found"


class UnsupportedMediaType(ChorusError):
    """The request's ``Content-Type`` is not one the endpoint reads (415)."""

    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class PayloadTooLarge(ChorusError):
    """The request body exceeds the configured limit (413)."""

    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UpstreamError(ChorusError):
    """The upstream provider answered with an error; its 4xx status is relayed, 5xx become 502.

    Drivers that got an HTTP answer pass its status as ``upstream_status`` and its ``Retry-After``
    header as ``retry_after``: the runtime's failover (:mod:`chorus.contract.retry`) decides from
    them whether the call is retried. Neither is shown to the client.
    """

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int | None = None, retry_after: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached (502)."""

    default_code = "upstream_unreachable"


class UpstreamConnectionLost(UpstreamError):
    """The upstream accepted the connection, then closed it before its answer was complete (502)."""

    default_code = "upstream_connection_lost"


class UpstreamInvalidResponse(UpstreamError):
    """The upstream answered something Chorus cannot use: not JSON, the wrong shape, too large (502).

    ``code`` is ``upstream_invalid_response``, or ``upstream_response_too_large`` past a size cap.
    """

    default_code = "upstream_invalid_response"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (504)."""

    status_code = 504
    default_code = "upstream_timeout"


class UpstreamCircuitOpen(UpstreamError):
    """The provider failed too often and is skipped for a cool-down, and no fallback answered (503)."""

    status_code = 503
    default_code = "upstream_circuit_open"


class BudgetExhausted(ChorusError):
    """A team member may not call a model: the request's model-call budget is used up (429)."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "model_call_budget_exhausted"


class PermissionDenied(ChorusError):
    """Authenticated, but this key may not do this (403): an admin endpoint, a model not allowed."""

    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class RateLimited(ChorusError):
    """A key's or workspace's requests or tokens per window are used up (429, type ``requests``/``tokens``)."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class QuotaExceeded(ChorusError):
    """A key's or workspace's spend budget for the period is used up (429)."""

    status_code = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class StateUnavailable(ChorusError):
    """The state store (PostgreSQL) cannot be reached right now; the client may retry."""

    status_code = 503
    error_type = "server_error"
    default_code = "state_unavailable"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key. Raised at startup only."""


class PluginError(Exception):
    """A plugin misbehaved (bad return value, missing driver); raised with the plugin's name."""


class ToolError(Exception):
    """A failure the model should read (bad arguments, upstream refused); becomes the tool result.

    Not a :class:`ChorusError`: a tool failure never fails the request. Public path: ``chorus.tools``.
    """
