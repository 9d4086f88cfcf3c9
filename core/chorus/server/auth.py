"""Authentication at the HTTP edge: a ``Bearer`` workspace key to its :class:`Workspace`.

The key is matched by its SHA-256 digest in constant time (:mod:`chorus.runtime.keys`) and is
never logged, echoed or stored in clear.
"""

from __future__ import annotations

from chorus.contract.context import Workspace
from chorus.contract.errors import AuthenticationFailed
from chorus.runtime.registry import Registry


def authenticate(registry: Registry, authorization: str | None) -> Workspace:
    """The workspace of the ``Authorization: Bearer <key>`` header; 401 otherwise."""
    if not authorization:
        raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationFailed("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
    workspace_id = registry.keyring.workspace_for(key)
    workspace = registry.workspaces.get(workspace_id) if workspace_id else None
    if workspace is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    return workspace
