"""The request pipeline: runs a chat completion through the hooks and a provider.

Hot-path rules: the request is decoded once (:func:`chorus.schemas.decode_chat_request`), the
upstream body is encoded once by the driver, each upstream response or chunk is decoded once and
encoded once for the client. Which hooks have implementations is decided at startup, so hooks
nobody implements cost nothing per request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from msgspec import UNSET

from chorus import legacy
from chorus.config import BotConfig, ServerConfig
from chorus.context import RequestContext, Source
from chorus.errors import AuthenticationFailed, ChorusError, PluginError
from chorus.layering import layer_messages
from chorus.plugins.manager import PluginManager
from chorus.registry import Registry, Workspace
from chorus.schemas import ChatCompletionRequest, Message
from chorus.targets import Target, unknown_target

log = logging.getLogger("chorus.pipeline")

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


async def await_me_maybe(value: Any) -> Any:
    """If ``value`` is awaitable, await it; otherwise return it (datasette's convention)."""
    if inspect.isawaitable(value):
        return await value
    return value


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + _encode(payload) + b"\n\n"


class Pipeline:
    """Authenticates, resolves, layers, calls the provider, loops over server tools, post-processes."""

    def __init__(self, pm: PluginManager, registry: Registry, server: ServerConfig) -> None:
        self.pm = pm
        self.registry = registry
        self.server = server
        hook = pm.hook
        self._resolve = hook.resolve_target
        self._prompt = hook.build_system_prompt if pm.implements("build_system_prompt") else None
        self._retrieve = hook.retrieve_context if pm.implements("retrieve_context") else None
        self._list_tools = hook.list_tools if pm.implements("list_tools") else None
        self._run_tools = hook.run_tools if pm.implements("run_tools") else None
        self._post = hook.post_process if pm.implements("post_process") else None
        self._bot_defaults: dict[tuple[str, str], dict[str, Any]] = {}

    # -- request preparation ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Workspace:
        """The workspace of a ``Bearer`` key; 401 otherwise. The key is never logged or echoed."""
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
        workspace_id = self.registry.keyring.workspace_for(key)
        workspace = self.registry.workspaces.get(workspace_id) if workspace_id else None
        if workspace is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return workspace

    def resolve(self, selector: str, workspace: Workspace) -> Target:
        """Resolve a selector through ``resolve_target`` or raise the 404."""
        target = self._resolve(selector=selector, workspace=workspace, registry=self.registry)
        if target is None:
            raise unknown_target(selector)
        if not isinstance(target, Target):
            raise PluginError(f"resolve_target returned {type(target).__name__}, expected Target")
        return target

    async def prepare(self, ctx: RequestContext) -> tuple[ChatCompletionRequest, list[dict[str, Any]]]:
        """Resolve the target and build the upstream request; returns it and the server tools."""
        request = ctx.request
        target = ctx.target = self.resolve(request.model, ctx.workspace)
        parts: list[str] = []
        if self._prompt is not None:
            for result in await self._gather(self._prompt(ctx=ctx)):
                if isinstance(result, str):
                    parts.append(result)
                elif isinstance(result, list):
                    parts.extend(str(p) for p in result)
        if self._retrieve is not None:
            for result in await self._gather(self._retrieve(ctx=ctx)):
                ctx.sources.extend(s for s in result or () if isinstance(s, Source))
        server_tools: list[dict[str, Any]] = []
        if self._list_tools is not None:
            for result in await self._gather(self._list_tools(ctx=ctx)):
                server_tools.extend(result or ())

        messages = request.messages
        if request.functions not in (UNSET, None) or request.function_call not in (UNSET, None):
            ctx.legacy_functions = isinstance(request.functions, list)
            request = legacy.translate_request(request)
        if legacy.uses_legacy_messages(messages):
            messages = legacy.translate_messages(messages)
        backstory = target.bot.backstory if target.bot is not None else None
        messages = layer_messages(messages, backstory=backstory, parts=parts, sources=ctx.sources)

        changes: dict[str, Any] = {"model": target.model, "messages": messages}
        if target.bot is not None:
            for name, value in self._defaults(target.bot).items():
                if getattr(request, name) is UNSET:
                    changes[name] = value
        if ctx.stream:
            changes["stream"] = True
            changes["stream_options"] = {"include_usage": True}
        else:
            changes["stream"] = UNSET
            changes["stream_options"] = UNSET
        if server_tools:
            client_tools = request.tools if isinstance(request.tools, list) else []
            changes["tools"] = [*client_tools, *server_tools]
        return msgspec.structs.replace(request, **changes), server_tools

    def _defaults(self, bot: BotConfig) -> dict[str, Any]:
        key = (bot.workspace, bot.id)
        defaults = self._bot_defaults.get(key)
        if defaults is None:
            defaults = self._bot_defaults[key] = msgspec.to_builtins(bot.params)
        return defaults

    @staticmethod
    async def _gather(results: list[Any]) -> list[Any]:
        if not any(inspect.isawaitable(r) for r in results):
            return results
        return list(await asyncio.gather(*(await_me_maybe(r) for r in results)))

    async def _post_process(self, ctx: RequestContext, payload: dict[str, Any], chunk: bool) -> None:
        if self._post is not None:
            await self._gather(self._post(ctx=ctx, payload=payload, chunk=chunk))

    async def _execute_tools(self, ctx: RequestContext, calls: list[dict[str, Any]]) -> dict[str, str] | None:
        """Run server tools for one assistant turn; ``None`` unless every call got a result."""
        if self._run_tools is None or not calls:
            return None
        merged: dict[str, str] = {}
        for result in await self._gather(self._run_tools(ctx=ctx, tool_calls=calls)):
            if result:
                merged.update(result)
        if all(call.get("id") in merged for call in calls):
            return merged
        return None

    @staticmethod
    def _continue(
        body: ChatCompletionRequest, calls: list[dict[str, Any]], results: dict[str, str], content: Any, last: bool
    ) -> ChatCompletionRequest:
        """Append the assistant turn and its tool results; on the last step forbid further calls."""
        assistant = Message(role="assistant", content=content or None, tool_calls=calls)
        tool_messages = [Message(role="tool", tool_call_id=c["id"], content=results[c["id"]]) for c in calls]
        changes: dict[str, Any] = {"messages": [*body.messages, assistant, *tool_messages]}
        if last:
            changes["tool_choice"] = "none"
        return msgspec.structs.replace(body, **changes)

    # -- non-streaming ---------------------------------------------------------------------------

    async def complete(self, ctx: RequestContext) -> bytes:
        """Run a non-streaming request and return the encoded ``chat.completion``."""
        body, server_tools = await self.prepare(ctx)
        target = ctx.target
        assert target is not None
        steps = 0
        while True:
            response = await target.provider.complete(body, ctx)
            ctx.add_usage(response.get("usage"))
            if not server_tools or steps >= self.server.max_tool_steps:
                break
            choices = response.get("choices") or []
            message = choices[0].get("message") or {} if choices else {}
            calls = message.get("tool_calls") or []
            results = await self._execute_tools(ctx, calls)
            if results is None:
                break
            steps += 1
            body = self._continue(body, calls, results, message.get("content"), steps >= self.server.max_tool_steps)
        response["id"] = ctx.completion_id
        response["object"] = "chat.completion"
        response["created"] = ctx.created
        response["model"] = target.selector
        if steps and ctx.usage is not None:
            response["usage"] = dict(ctx.usage)
        if ctx.legacy_functions:
            for choice in response.get("choices") or []:
                legacy.to_legacy_message(choice.get("message") or {})
                choice["finish_reason"] = legacy.legacy_finish(choice.get("finish_reason"))
        await self._post_process(ctx, response, False)
        return _encode(response)

    # -- streaming -------------------------------------------------------------------------------

    async def stream(self, ctx: RequestContext) -> AsyncIterator[bytes]:
        """Yield SSE events for a streaming request.

        Errors before the first event propagate (the caller turns them into an HTTP status);
        errors after it end the stream with an ``error`` event and no ``[DONE]``.
        """
        body, server_tools = await self.prepare(ctx)
        started = False
        try:
            async for event in self._stream_events(ctx, body, server_tools):
                started = True
                yield event
        except ChorusError as exc:
            if not started:
                raise
            log.warning("request %s: stream failed after start: %s", ctx.request_id, exc.message)
            yield sse(exc.to_dict())
            return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            if not started:
                raise
            log.exception("request %s: stream failed after start", ctx.request_id)
            error = ChorusError(f"The stream failed (request id {ctx.request_id}).")
            yield sse(error.to_dict())
            return
        yield DONE

    async def _stream_events(
        self, ctx: RequestContext, body: ChatCompletionRequest, server_tools: list[dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        target = ctx.target
        assert target is not None
        selector, cid, created = target.selector, ctx.completion_id, ctx.created
        include_usage, legacy_mode = ctx.include_usage, ctx.legacy_functions
        post = self._post is not None
        sent_role = False
        steps = 0

        async def emit(chunk: dict[str, Any]) -> bytes:
            nonlocal sent_role
            chunk["id"] = cid
            chunk["object"] = "chat.completion.chunk"
            chunk["created"] = created
            chunk["model"] = selector
            if include_usage:
                chunk["usage"] = None
            elif "usage" in chunk:
                del chunk["usage"]
            for choice in chunk["choices"]:
                delta = choice.get("delta")
                if delta is None:
                    delta = choice["delta"] = {}
                if sent_role:
                    delta.pop("role", None)
                if legacy_mode:
                    legacy.to_legacy_delta(delta)
                    if choice.get("finish_reason"):
                        choice["finish_reason"] = legacy.legacy_finish(choice["finish_reason"])
            if not sent_role and chunk["choices"]:
                chunk["choices"][0]["delta"].setdefault("role", "assistant")
                sent_role = True
            if post:
                await self._post_process(ctx, chunk, True)
            return sse(chunk)

        while True:
            hold = bool(server_tools) and steps < self.server.max_tool_steps
            held: list[dict[str, Any]] = []
            fragments: dict[int, dict[str, Any]] = {}
            content: list[str] = []
            finish: str | None = None
            async for chunk in target.provider.stream(body, ctx):
                usage = chunk.get("usage")
                if usage:
                    ctx.add_usage(usage)
                choices = chunk.get("choices")
                if not choices:
                    continue
                if hold:
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    if delta.get("tool_calls") or choice.get("finish_reason"):
                        _accumulate(fragments, delta.get("tool_calls") or ())
                        finish = choice.get("finish_reason") or finish
                        held.append(chunk)
                        continue
                    if isinstance(delta.get("content"), str):
                        content.append(delta["content"])
                yield await emit(chunk)
            if hold and finish == "tool_calls" and fragments:
                calls = [fragments[i] for i in sorted(fragments)]
                results = await self._execute_tools(ctx, calls)
                if results is not None:
                    steps += 1
                    body = self._continue(body, calls, results, "".join(content), steps >= self.server.max_tool_steps)
                    continue
            for chunk in held:
                yield await emit(chunk)
            break
        if include_usage:
            final = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": selector,
                     "choices": [], "usage": ctx.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            if post:
                await self._post_process(ctx, final, True)
            yield sse(final)


def _accumulate(fragments: dict[int, dict[str, Any]], pieces: Any) -> None:
    """Merge streamed ``delta.tool_calls`` fragments into whole calls keyed by index."""
    for piece in pieces:
        index = piece.get("index", 0)
        call = fragments.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if piece.get("id"):
            call["id"] = piece["id"]
        function = piece.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


__all__ = ["DONE", "Pipeline", "await_me_maybe", "sse"]
