"""The request pipeline: runs a chat completion through the hooks and a provider.

Hot-path rules: the request is decoded once (:func:`chorus.schemas.decode_chat_request`), the
upstream body is encoded once by the driver, each upstream response or chunk is decoded once and
encoded once for the client. Which hooks have implementations is decided at startup, so hooks
nobody implements cost nothing per request.

The agent loop: when server-side tools are offered (``list_tools``) and the model calls them,
``run_tools`` executes them and the model is called again, up to the step limit. Server calls and
their results never reach the client. Client calls are returned as usual; hidden steps of that turn
are parked (:mod:`chorus.turns`) and restored when the client sends its results back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from msgspec import UNSET

from chorus.runtime import legacy
from chorus.contract.config import BotConfig, ServerConfig
from chorus.contract.context import CallBudget, RequestContext, Source
from chorus.contract.errors import AuthenticationFailed, BudgetExhausted, ChorusError, PluginError
from chorus.runtime.layering import layer_messages
from chorus.plugins.manager import PluginManager
from chorus.runtime.registry import Registry, Workspace
from chorus.contract.schemas import ChatCompletionRequest, Message
from chorus.contract.targets import Target, unknown_target
from chorus.runtime.turns import MemoryTurnStore, ParkedTurn, TurnStore, restore_messages, resumed_call_ids

log = logging.getLogger("chorus.pipeline")

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def await_me_maybe(value: Any) -> Any:
    """If ``value`` is awaitable, await it; otherwise return it (datasette's convention)."""
    if inspect.isawaitable(value):
        return await value
    return value


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + _encode(payload) + b"\n\n"


class Prepared(msgspec.Struct, kw_only=True):
    """The upstream request and what the agent loop needs to know about it."""

    body: ChatCompletionRequest
    server_tools: frozenset[str]
    max_steps: int


class Pipeline:
    """Authenticates, resolves, layers, calls the provider, loops over server tools, post-processes."""

    def __init__(self, pm: PluginManager, registry: Registry, server: ServerConfig,
                 turns: TurnStore | None = None) -> None:
        self.pm = pm
        self.registry = registry
        self.server = server
        self.turns = turns if turns is not None else MemoryTurnStore(server.parked_turns_ttl_seconds)
        # HookRunner: the same calls as pm.hook.<name>(...), without pluggy's generic per-call overhead.
        self._resolve = pm.runner("resolve_target")
        self._prompt = pm.runner("build_system_prompt") if pm.implements("build_system_prompt") else None
        self._retrieve = pm.runner("retrieve_context") if pm.implements("retrieve_context") else None
        self._list_tools = pm.runner("list_tools") if pm.implements("list_tools") else None
        self._run_tools = pm.runner("run_tools") if pm.implements("run_tools") else None
        self._post = pm.runner("post_process") if pm.implements("post_process") else None
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

    async def prepare(self, ctx: RequestContext) -> Prepared:
        """Resolve the target and build the upstream request."""
        request = ctx.request
        ctx.pipeline = self
        target = ctx.target = self.resolve(request.model, ctx.workspace)
        if ctx.budget is None and target.bot is not None:
            ctx.budget = CallBudget(target.bot.max_model_calls)
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
        # Turns are parked only by targets with server tools; other requests skip the lookup.
        call_ids = resumed_call_ids(messages) if server_tools else None
        if call_ids:
            messages = await restore_messages(messages, ctx.workspace.id, self.turns, call_ids)
        backstory = target.bot.backstory if target.bot is not None else None
        messages = layer_messages(messages, backstory=backstory, parts=parts, sources=ctx.sources)

        changes: dict[str, Any] = {
            "model": target.model, "messages": messages, "chorus_progress": UNSET, "return_citations": UNSET,
            "web_search_options": UNSET, "search_domain_filter": UNSET, "search_recency_filter": UNSET,
        }
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
        names = frozenset(t.get("function", {}).get("name", "") for t in server_tools)
        if server_tools:
            # Server tools win a name clash: the client's same-named tool is not offered.
            client_tools = [
                t for t in (request.tools if isinstance(request.tools, list) else [])
                if t.get("function", {}).get("name") not in names
            ]
            changes["tools"] = [*client_tools, *server_tools]
        max_steps = self.server.max_tool_steps
        if target.bot is not None and target.bot.max_tool_steps is not None:
            max_steps = target.bot.max_tool_steps
        return Prepared(body=msgspec.structs.replace(request, **changes), server_tools=names, max_steps=max_steps)

    def _defaults(self, bot: BotConfig) -> dict[str, Any]:
        key = (bot.workspace, bot.id)
        defaults = self._bot_defaults.get(key)
        if defaults is None:
            defaults = self._bot_defaults[key] = msgspec.to_builtins(bot.params)
        return defaults

    @staticmethod
    async def _gather(results: list[Any]) -> list[Any]:
        """Await the awaitable results, concurrently when there are several (order is kept)."""
        pending = [i for i, r in enumerate(results) if inspect.isawaitable(r)]
        if not pending:
            return results
        if len(pending) == 1:  # nothing to run alongside: await it in this task
            results = list(results)
            results[pending[0]] = await results[pending[0]]
            return results
        return list(await asyncio.gather(*(await_me_maybe(r) for r in results)))

    async def _post_process(self, ctx: RequestContext, payload: dict[str, Any], chunk: bool) -> None:
        if self._post is not None:
            results = self._post(ctx=ctx, payload=payload, chunk=chunk)
            if results:  # only implementations that returned something (e.g. a coroutine) are awaited
                await self._gather(results)

    # -- the agent loop ---------------------------------------------------------------------------

    async def _execute_tools(self, ctx: RequestContext, calls: list[dict[str, Any]]) -> dict[str, str]:
        """Run the server-side calls of one assistant turn; results keyed by tool call id."""
        merged: dict[str, str] = {}
        if self._run_tools is None or not calls:
            return merged
        for result in await self._gather(self._run_tools(ctx=ctx, tool_calls=calls)):
            if result:
                merged.update(result)
        return merged

    async def _advance(
        self, ctx: RequestContext, prepared: Prepared, hidden: list[Message],
        calls: list[dict[str, Any]], results: dict[str, str], content: Any, steps: int,
    ) -> list[dict[str, Any]]:
        """Record one tool round. Returns the client calls left (empty: call the model again)."""
        assistant = Message(role="assistant", content=content or None, tool_calls=calls)
        tool_messages = [Message(role="tool", tool_call_id=c["id"], content=results[c["id"]]) for c in calls if c["id"] in results]
        client_calls = [c for c in calls if c["id"] not in results]
        if client_calls:
            await self.turns.park(
                ctx.workspace.id, [c["id"] for c in client_calls],
                ParkedTurn(hidden=list(hidden), assistant=assistant, results=tool_messages),
            )
            return client_calls
        hidden.extend([assistant, *tool_messages])
        changes: dict[str, Any] = {"messages": [*prepared.body.messages, assistant, *tool_messages]}
        if steps >= prepared.max_steps:
            changes["tool_choice"] = "none"
        prepared.body = msgspec.structs.replace(prepared.body, **changes)
        return []

    async def _park_client_turn(self, ctx: RequestContext, hidden: list[Message], message: dict[str, Any]) -> None:
        """A turn that ends with client calls after hidden steps: park those steps for the resume."""
        calls = message.get("tool_calls") or []
        if hidden and calls:
            assistant = Message(role="assistant", content=message.get("content"), tool_calls=calls)
            await self.turns.park(ctx.workspace.id, [c["id"] for c in calls], ParkedTurn(hidden=list(hidden), assistant=assistant, results=[]))

    # -- non-streaming ---------------------------------------------------------------------------

    def _spend(self, ctx: RequestContext) -> None:
        """Count one model call against the request budget; team members stop when it is gone."""
        if ctx.budget is not None:
            if ctx.depth and ctx.budget.exhausted:
                raise BudgetExhausted(f"The request's budget of {ctx.budget.limit} model calls is used up.")
            ctx.budget.spend()

    async def complete(self, ctx: RequestContext) -> bytes:
        """Run a non-streaming request and return the encoded ``chat.completion``."""
        return _encode(await self.complete_dict(ctx))

    async def complete_dict(self, ctx: RequestContext) -> dict[str, Any]:
        """Run a non-streaming request; the ``chat.completion`` as a dict (used for team members)."""
        prepared = await self.prepare(ctx)
        target = ctx.target
        assert target is not None
        steps = 0
        hidden: list[Message] = []
        while True:
            self._spend(ctx)
            response = await target.provider.complete(prepared.body, ctx)
            ctx.add_usage(response.get("usage"))
            if not prepared.server_tools:
                break
            choices = response.get("choices") or []
            message = (choices[0].get("message") or {}) if choices else {}
            calls = message.get("tool_calls") or []
            server_calls = [c for c in calls if c.get("function", {}).get("name") in prepared.server_tools]
            if not server_calls or steps >= prepared.max_steps:
                _drop_server_calls(choices[0] if choices else {}, prepared.server_tools)
                await self._park_client_turn(ctx, hidden, message)
                break
            steps += 1
            results = await self._execute_tools(ctx, server_calls)
            results = {c["id"]: results.get(c["id"], _unanswered(c)) for c in server_calls}
            client_calls = await self._advance(ctx, prepared, hidden, calls, results, message.get("content"), steps)
            if client_calls:
                message["tool_calls"] = client_calls
                choices[0]["finish_reason"] = "tool_calls"
                break
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
        return response

    # -- streaming -------------------------------------------------------------------------------

    async def stream(self, ctx: RequestContext) -> AsyncIterator[bytes]:
        """Yield SSE events for a streaming request.

        Errors before the first event propagate (the caller turns them into an HTTP status);
        errors after it end the stream with an ``error`` event and no ``[DONE]``.
        """
        prepared = await self.prepare(ctx)
        started = False
        try:
            async for event in self._stream_events(ctx, prepared):
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

    async def _stream_events(self, ctx: RequestContext, prepared: Prepared) -> AsyncIterator[bytes]:
        target = ctx.target
        assert target is not None
        selector, cid, created = target.selector, ctx.completion_id, ctx.created
        include_usage, legacy_mode = ctx.include_usage, ctx.legacy_functions
        post = self._post
        sent_role = False
        steps = 0
        hidden: list[Message] = []

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
            if post is not None:
                results = post(ctx=ctx, payload=chunk, chunk=True)
                if results:  # as _post_process, inlined: this runs once per streamed chunk
                    await self._gather(results)
            return sse(chunk)

        def progress(event: dict[str, Any]) -> bytes:
            return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": selector,
                        "choices": [], "chorus": event})

        while True:
            hold = bool(prepared.server_tools)
            fragments: dict[int, dict[str, Any]] = {}
            content: list[str] = []
            finish: Any = None
            last_choice: dict[str, Any] = {}
            self._spend(ctx)
            async for chunk in target.provider.stream(prepared.body, ctx):
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
                        last_choice = choice
                        if isinstance(delta.get("content"), str) and delta["content"]:
                            content.append(delta["content"])
                            yield await emit({"choices": [{"index": 0, "delta": {"content": delta["content"]}, "finish_reason": None}]})
                        continue
                    if isinstance(delta.get("content"), str):
                        content.append(delta["content"])
                yield await emit(chunk)
            if not hold:
                break
            calls = [fragments[i] for i in sorted(fragments)]
            server_calls = [c for c in calls if c["function"]["name"] in prepared.server_tools]
            if server_calls and steps < prepared.max_steps:
                steps += 1
                if ctx.state.get("progress"):
                    for call in server_calls:
                        yield progress({"type": "tool.started", "name": call["function"]["name"], "step": steps})
                task = asyncio.ensure_future(self._execute_tools(ctx, server_calls))
                try:
                    while not task.done():
                        done, _ = await asyncio.wait({task}, timeout=self.server.keepalive_seconds)
                        if not done:
                            yield KEEPALIVE
                    results = task.result()
                finally:
                    if not task.done():
                        task.cancel()
                results = {c["id"]: results.get(c["id"], _unanswered(c)) for c in server_calls}
                if ctx.state.get("progress"):
                    for call in server_calls:
                        yield progress({"type": "tool.finished", "name": call["function"]["name"], "step": steps})
                client_calls = await self._advance(ctx, prepared, hidden, calls, results, "".join(content), steps)
                if not client_calls:
                    continue
                calls, finish = client_calls, "tool_calls"
            else:
                calls = [c for c in calls if c["function"]["name"] not in prepared.server_tools]
                if not calls and finish == "tool_calls":
                    finish = "stop"
                await self._park_client_turn(ctx, hidden, {"content": "".join(content) or None, "tool_calls": calls})
            for index, call in enumerate(calls):
                fragment = {"index": index, "id": call["id"], "type": "function", "function": dict(call["function"])}
                yield await emit({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})
            final_choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish or "stop"}
            if "logprobs" in last_choice:
                final_choice["logprobs"] = None
            yield await emit({"choices": [final_choice]})
            break
        if include_usage:
            final = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": selector,
                     "choices": [], "usage": ctx.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            if post is not None:
                await self._post_process(ctx, final, True)
            yield sse(final)


def _unanswered(call: dict[str, Any]) -> str:
    return f"Error: no server tool answered the call to {call.get('function', {}).get('name')!r}."


def _drop_server_calls(choice: dict[str, Any], server_tools: frozenset[str]) -> None:
    """Never show server tool calls to the client (e.g. past the step limit)."""
    message = choice.get("message") or {}
    calls = message.get("tool_calls")
    if not calls:
        return
    kept = [c for c in calls if c.get("function", {}).get("name") not in server_tools]
    if len(kept) == len(calls):
        return
    if kept:
        message["tool_calls"] = kept
    else:
        del message["tool_calls"]
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"


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
