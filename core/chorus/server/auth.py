"""Authentication at the HTTP edge: a ``Bearer`` key to its caller, workspace keys and admin keys apart.

Workspace keys are config-file keys (matched by SHA-256 digest in constant time,
:mod:`chorus.runtime.keys`) and managed keys issued through the admin API (looked up by digest
through a cache, :mod:`chorus.runtime.access`). Admin keys (``[server] admin_keys``) open only
``/admin/v1``; workspace keys get a 403 there, admin keys a 401 everywhere else. A key is never
logged, echoed or stored in clear.
"""

from __future__ import annotations

from typing import Any

from chorus.contract.context import Workspace
from chorus.contract.errors import AuthenticationFailed, PermissionDenied
from chorus.runtime.access import Access, Caller
from chorus.runtime.registry import Registry

#: Where the chat route leaves a limited key's ``x-ratelimit-*`` headers for :func:`add_rate_limit_headers`.
RATE_LIMIT_HEADERS = "chorus.ratelimit"


def bearer(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; 401 when missing or malformed."""
    if not authorization:
        raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationFailed("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
    return key


async def identify(registry: Registry, authorization: str | None) -> Caller:
    """The caller (workspace, key id, limits) of a workspace key; 401 otherwise."""
    key = bearer(authorization)
    access = registry.access
    if access is None:  # a registry without the access layer (unit tests): config keys only
        workspace_id = registry.keyring.workspace_for(key)
        workspace = registry.workspaces.get(workspace_id) if workspace_id else None
        if workspace is None:
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        return Caller(workspace, "", [])
    return await access.identify(key)


async def authenticate(registry: Registry, authorization: str | None) -> Workspace:
    """The workspace of the ``Authorization: Bearer <key>`` header; 401 otherwise."""
    return (await identify(registry, authorization)).workspace


async def authenticate_admin(access: Access, authorization: str | None) -> None:
    """Pass for an admin key; 403 for a workspace key, 401 for anything else."""
    key = bearer(authorization)
    if access.admin(key):
        return
    try:
        await access.identify(key)
    except AuthenticationFailed:
        raise AuthenticationFailed("Incorrect admin key provided.", code="invalid_api_key") from None
    raise PermissionDenied("The admin API needs an admin key ([server] admin_keys); workspace keys cannot use it.")


async def add_rate_limit_headers(message: Any, scope: Any) -> None:
    """Litestar ``before_send`` hook: a limited key's ``x-ratelimit-*`` headers on its response."""
    if message["type"] == "http.response.start":
        headers = scope.get(RATE_LIMIT_HEADERS)
        if headers:
            message["headers"] = [*(message.get("headers") or ()), *headers]
