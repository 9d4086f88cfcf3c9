"""The admin API (``/admin/v1``): workspaces, managed keys and usage, for admin keys only.

Every handler first checks the ``Authorization`` header against ``[server] admin_keys``
(:func:`chorus.server.auth.authenticate_admin`): a workspace key is a 403, anything else a 401.
Bodies are strict (an unknown field is a 400 naming it). A key's secret appears once, in the
response that creates it; everywhere else a key shows its id and a short non-secret prefix.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from msgspec import UNSET, UnsetType

from chorus.contract.config import Budget, Limits
from chorus.contract.errors import InvalidRequest, NotFound
from chorus.contract.schemas import decode_body
from chorus.runtime.access import NANOS, Access
from chorus.runtime.registry import Registry
from chorus.server.auth import authenticate_admin
from chorus.server.body import json_body
from chorus.storage.access import ManagedKey

_encode = msgspec.json.Encoder().encode
JSON = "application/json"


class BudgetBody(msgspec.Struct, forbid_unknown_fields=True):
    amount: Annotated[float, msgspec.Meta(ge=0)]
    period: Literal["hour", "day", "week", "month"] = "month"


Expiry = int | str  # Unix seconds or an ISO 8601 time ("2027-01-31T00:00:00Z")
Count = Annotated[int, msgspec.Meta(ge=1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Patterns = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=300)]], msgspec.Meta(max_length=200)]


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name = "key"
    expires_at: Expiry | None = None
    allowed_models: Patterns | None = None
    rpm: Count | None = None
    tpm: Count | None = None
    budget: BudgetBody | None = None


class UpdateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields sent replace the stored ones; ``null`` clears (no expiry, every model, no limit/budget)."""

    name: Name | UnsetType = UNSET
    expires_at: Expiry | None | UnsetType = UNSET
    allowed_models: Patterns | None | UnsetType = UNSET
    rpm: Count | None | UnsetType = UNSET
    tpm: Count | None | UnsetType = UNSET
    budget: BudgetBody | None | UnsetType = UNSET


_create = msgspec.json.Decoder(CreateKey)
_update = msgspec.json.Decoder(UpdateKey)


def _expiry(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"expires_at {value!r} is neither Unix seconds nor an ISO 8601 time.",
                             param="expires_at") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _time(value: str | None, param: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param} {value!r} is neither Unix seconds nor an ISO 8601 time.", param=param) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def key_object(key: ManagedKey) -> dict[str, Any]:
    """A key as the admin API shows it (never the secret, never the digest)."""
    budget = None if key.budget_amount is None else {"amount": key.budget_amount, "period": key.budget_period}
    return {
        "object": "api_key", "id": key.id, "workspace": key.workspace, "name": key.name, "prefix": key.prefix,
        "created_at": key.created_at, "expires_at": key.expires_at, "revoked_at": key.revoked_at,
        "allowed_models": key.allowed_models, "rpm": key.rpm, "tpm": key.tpm, "budget": budget,
    }


def _json(payload: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(payload), media_type=JSON, status_code=status)


class AdminController(Controller):
    path = "/admin/v1"

    @staticmethod
    async def _admin(request: Request[Any, Any, Any]) -> tuple[Access, Registry]:
        registry: Registry = request.app.state.registry
        access = registry.access
        assert access is not None
        await authenticate_admin(access, request.headers.get("authorization"))
        return access, registry

    @staticmethod
    def _workspace(registry: Registry, workspace: str) -> str:
        if workspace not in registry.workspaces:
            raise NotFound(f"No workspace {workspace!r}.", param="workspace", code="workspace_not_found")
        return workspace

    @staticmethod
    async def _key(access: Access, workspace: str, key_id: str) -> ManagedKey:
        key = await access.store.get_key(workspace, key_id)
        if key is None:
            raise NotFound(f"No key {key_id!r} in workspace {workspace!r}.", param="key_id", code="key_not_found")
        return key

    @get("/workspaces")
    async def list_workspaces(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every configured workspace with its limits and budget."""
        _, registry = await self._admin(request)
        config = request.app.state.services.config
        data = [{"object": "workspace", "id": ws.id, "name": ws.name,
                 "limits": msgspec.to_builtins(ws.limits), "budget": msgspec.to_builtins(ws.budget),
                 "config_keys": len(ws.api_keys)}
                for ws in config.workspaces if ws.id in registry.workspaces]
        return _json({"object": "list", "data": data})

    @post("/workspaces/{workspace:str}/keys")
    async def create_key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Issue a key; the response holds its secret, shown this once."""
        access, registry = await self._admin(request)
        workspace = self._workspace(registry, request.path_params["workspace"])
        body = decode_body(await json_body(request), _create)
        budget = None if body.budget is None else Budget(amount=body.budget.amount, period=body.budget.period)
        key, secret = await access.create_key(
            workspace, body.name, expires_at=_expiry(body.expires_at), allowed_models=body.allowed_models,
            limits=Limits(rpm=body.rpm, tpm=body.tpm), budget=budget)
        return _json(key_object(key) | {"key": secret}, status=201)

    @get("/workspaces/{workspace:str}/keys")
    async def list_keys(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        access, registry = await self._admin(request)
        workspace = self._workspace(registry, request.path_params["workspace"])
        return _json({"object": "list", "data": [key_object(k) for k in await access.store.list_keys(workspace)]})

    @get("/workspaces/{workspace:str}/keys/{key_id:str}")
    async def get_key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        access, registry = await self._admin(request)
        workspace = self._workspace(registry, request.path_params["workspace"])
        return _json(key_object(await self._key(access, workspace, request.path_params["key_id"])))

    @patch("/workspaces/{workspace:str}/keys/{key_id:str}")
    async def update_key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Change a key's name, expiry, allow-list, limits or budget; every instance sees it within a second."""
        access, registry = await self._admin(request)
        workspace = self._workspace(registry, request.path_params["workspace"])
        body = decode_body(await json_body(request), _update)
        key = await self._key(access, workspace, request.path_params["key_id"])
        changes: dict[str, Any] = {}
        if body.name is not UNSET:
            changes["name"] = body.name
        if body.expires_at is not UNSET:
            changes["expires_at"] = _expiry(body.expires_at)
        if body.allowed_models is not UNSET:
            changes["allowed_models"] = body.allowed_models
        if body.rpm is not UNSET:
            changes["rpm"] = body.rpm
        if body.tpm is not UNSET:
            changes["tpm"] = body.tpm
        if body.budget is not UNSET:
            changes["budget_amount"] = None if body.budget is None else body.budget.amount
            changes["budget_period"] = None if body.budget is None else body.budget.period
        key = msgspec.structs.replace(key, **changes)
        await access.save_key(key)
        return _json(key_object(key))

    @delete("/workspaces/{workspace:str}/keys/{key_id:str}", status_code=200)
    async def revoke_key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Revoke a key (kept, so its usage stays attributable); refused everywhere within a second."""
        access, registry = await self._admin(request)
        workspace = self._workspace(registry, request.path_params["workspace"])
        key = await self._key(access, workspace, request.path_params["key_id"])
        if key.revoked_at is None:
            key = msgspec.structs.replace(key, revoked_at=int(time.time()))
            await access.save_key(key)
        return _json(key_object(key) | {"revoked": True})

    @get("/usage")
    async def usage(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Requests, tokens and cost per workspace, key, bot or model over ``[start, end)`` (Unix seconds or ISO)."""
        access, registry = await self._admin(request)
        params = request.query_params
        group_by = params.get("group_by") or "workspace"
        if group_by not in ("workspace", "key", "bot", "model"):
            raise InvalidRequest(f"group_by must be workspace, key, bot or model, not {group_by!r}.", param="group_by")
        now = time.time()
        start = _time(params.get("start"), "start", 0.0)
        end = _time(params.get("end"), "end", now + 1)
        workspace = params.get("workspace")
        if workspace is not None:
            self._workspace(registry, workspace)
        await access.flush()  # this instance's pending records count too
        rows = await access.store.usage(group_by, start, end, workspace)  # type: ignore[arg-type]
        data = [{group_by: g.group, "requests": g.requests, "input_tokens": g.input_tokens,
                 "output_tokens": g.output_tokens, "cached_input_tokens": g.cached_tokens,
                 "total_tokens": g.input_tokens + g.output_tokens, "cost": g.cost_nanos / NANOS}
                for g in rows]
        return _json({"object": "list", "group_by": group_by, "start": start, "end": end, "data": data})
