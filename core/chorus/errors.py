"""Public import path. The errors Chorus and its plugins raise; each renders as the OpenAI error envelope.

The definitions live in :mod:`chorus.contract.errors`; plugins import them from here."""

from chorus.contract.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    ChorusError,
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    QuotaExceeded,
    RateLimited,
    StateUnavailable,
    ToolError,
    UnsupportedMediaType,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "AuthenticationFailed",
    "BudgetExhausted",
    "ChorusError",
    "ConfigError",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "QuotaExceeded",
    "RateLimited",
    "StateUnavailable",
    "ToolError",
    "UnsupportedMediaType",
    "UpstreamConnectionLost",
    "UpstreamError",
    "UpstreamInvalidResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
