"""``GET /v1/models`` and ``GET /v1/models/{id}`` in the OpenAI list shape."""

from __future__ import annotations

import fnmatch
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get

from chorus.contract.context import Registry, Workspace
from chorus.contract.errors import ChorusError
from chorus.contract.targets import BOT_PREFIX, MODEL_PREFIX, Target
from chorus.runtime.pipeline import Pipeline
from chorus.server.auth import authenticate, identify

JSON = "application/json"
_encode = msgspec.json.Encoder().encode


def model_object(target: Target, created: int, workspace: Workspace, registry: Registry) -> dict[str, Any]:
    """The ``model`` object for a resolved target; bots carry name, description and capabilities."""
    if target.bot is None:
        return {"id": target.selector, "object": "model", "created": created, "owned_by": target.provider.id}
    bot = target.bot
    return {
        "id": target.selector,
        "object": "model",
        "created": created,
        "owned_by": workspace.id,
        "name": bot.name or bot.id,
        "description": bot.description,
        "capabilities": {
            "backstory": bool(bot.backstory),
            "streaming": True,
            "client_tools": True,
            "skillsets": list(bot.skillsets),
            "server_tools": [spec.name for s in registry.skillsets_of(bot) for spec in s.specs()],
            "datasets": list(bot.datasets),
            "search": {"engine": bot.search.engine, "mode": bot.search.mode} if bot.search else None,
            "team": list(bot.team),
        },
    }


class ModelsController(Controller):
    """What the caller's key may use."""

    path = "/"

    @get(["/v1/models", "/models"])
    async def list_models(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every ``model/name=<provider>/<model>`` and every ``bot/id=<id>`` of the workspace (those the
        key's ``allowed_models`` match, for a managed key with an allow-list)."""
        pipeline: Pipeline = request.app.state.pipeline
        caller = await identify(pipeline.registry, request.headers.get("authorization"))
        workspace = caller.workspace
        created: int = request.app.state.started_at
        data: list[dict[str, Any]] = []
        for provider in pipeline.registry.providers.values():
            for model in provider.advertised_models():
                selector = f"{MODEL_PREFIX}{provider.id}/{model}"
                target = Target(selector=selector, kind="model", provider=provider, model=model)
                data.append(model_object(target, created, workspace, pipeline.registry))
        for bot in pipeline.registry.bots(workspace.id):
            target = pipeline.resolve(f"{BOT_PREFIX}{bot.id}", workspace)
            data.append(model_object(target, created, workspace, pipeline.registry))
        if caller.allowed is not None:
            data = [m for m in data if any(fnmatch.fnmatchcase(m["id"], p) for p in caller.allowed)]
        return Response(content=_encode({"object": "list", "data": data}), media_type=JSON)

    @get(["/v1/models/{model_id:path}", "/models/{model_id:path}"])
    async def retrieve_model(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """One selector, resolved exactly as a chat request would resolve it."""
        pipeline: Pipeline = request.app.state.pipeline
        workspace = await authenticate(pipeline.registry, request.headers.get("authorization"))
        selector = str(request.path_params["model_id"]).lstrip("/")
        if not selector:
            raise ChorusError("A model id is required.", status_code=404, error_type="invalid_request_error")
        target = pipeline.resolve(selector, workspace)
        model = model_object(target, request.app.state.started_at, workspace, pipeline.registry)
        return Response(content=_encode(model), media_type=JSON)
