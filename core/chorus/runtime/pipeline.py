"""The pipeline: runs a chat completion through the hooks, the provider and the agent loop.

Hot-path rules: the request is decoded once (:meth:`Pipeline.decode`, with the request type built at
startup from the fields plugins declare), the upstream body is encoded once by the driver, each
upstream response or chunk is decoded once and encoded once for the client. Which hooks have
implementations is decided at startup, so hooks nobody implements cost nothing per request. A target
without server tools makes one model call; one with them runs the agent loop
(:mod:`chorus.runtime.agent`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET

from chorus.contract.config import BotConfig, ServerConfig
from chorus.contract.context import CallBudget, RequestContext, Source, Workspace
from chorus.contract.errors import ChorusError, PluginError
from chorus.contract.fields import RequestField
from chorus.contract.schemas import OPENAI_FIELDS, ChatCompletionRequest, decode_chat_request, extend_request
from chorus.contract.targets import Target, unknown_target
from chorus.plugins.manager import PluginManager
from chorus.runtime import legacy
from chorus.runtime.agent import AgentLoop, ModelCall, Prepared, Turn, spend, tool_name
from chorus.runtime.answers import check_chunk, check_completion
from chorus.runtime.layering import layer_messages
from chorus.runtime.registry import Registry
from chorus.runtime.resume import restore_messages, resumed_call_ids
from chorus.runtime.streaming import DONE, Emit, accumulate, chunk_emitter, sse, usage_chunk
from chorus.storage.turns import MemoryTurnStore, TurnStore

if TYPE_CHECKING:
    from chorus.runtime.access import Access
    from chorus.runtime.tracing import OtelTracing

log = logging.getLogger("chorus.pipeline")

_NO_EVENTS: tuple[bytes, ...] = ()  # what a non-streaming model call relays
#: ``ctx.state`` key: the selector the answer's ``model`` echoes when it is not the resolved one
#: (the ``conversation/id=`` selector names a conversation whose target answers).
ECHO_SELECTOR = "selector.echo"

_encode = msgspec.json.Encoder().encode


async def await_me_maybe(value: Any) -> Any:
    """If ``value`` is awaitable, await it; otherwise return it (datasette's convention)."""
    if inspect.isawaitable(value):
        return await value
    return value


def account(ctx: RequestContext, target: Target, usage: Any) -> None:
    """One upstream call's ``usage``: into the client-visible total and, priced, into the request's ledger."""
    if not usage or not isinstance(usage, dict):
        return
    ctx.add_usage(usage)
    input_tokens = usage.get("prompt_tokens")
    output_tokens = usage.get("completion_tokens")
    input_tokens = input_tokens if isinstance(input_tokens, int) else 0
    output_tokens = output_tokens if isinstance(output_tokens, int) else 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) else 0
    provider, model = target.provider, target.model
    if target.fallbacks and ctx.upstream and ctx.upstream != f"{provider.id}/{model}":
        for candidate, name in target.fallbacks:  # a fallback answered: its usage, its price
            if ctx.upstream == f"{candidate.id}/{name}":
                provider, model = candidate, name
                break
    price = provider.price(model)
    cost = price.cost_nanos(input_tokens, output_tokens, cached) if price is not None else 0
    ctx.ledger.add(provider.id, model, input_tokens, output_tokens, cached, cost)


def outcome(exc: BaseException) -> str:
    """The status a failed request is recorded with: the error's code (or type), ``cancelled``, ``error``."""
    if isinstance(exc, ChorusError):
        return exc.code or exc.error_type
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"
    return "error"


def declared_fields(pm: PluginManager) -> list[RequestField]:
    """The request fields plugins declare (``request_fields``); clashes are plugin errors."""
    owners: dict[str, str] = {}
    fields: list[RequestField] = []
    for plugin, result in pm.collect("request_fields"):
        for field in result or ():
            if not isinstance(field, RequestField):
                raise PluginError(f"plugin {plugin!r}: request_fields must return RequestField objects")
            if field.name in OPENAI_FIELDS:
                raise PluginError(f"plugin {plugin!r} declares request field {field.name!r}, which Chorus already maps")
            if field.name in owners:
                raise PluginError(f"plugins {owners[field.name]!r} and {plugin!r} both declare request field {field.name!r}")
            owners[field.name] = plugin
            fields.append(field)
    return fields


class Pipeline:
    """Resolves, layers, calls the provider, loops over server tools, post-processes.

    Implements :class:`chorus.contract.context.Runtime` (``ctx.runtime``) for plugins that run
    sub-requests (teams).
    """

    def __init__(self, pm: PluginManager, registry: Registry, server: ServerConfig,
                 turns: TurnStore | None = None, tracing: OtelTracing | None = None) -> None:
        self.pm = pm
        self.tracing = tracing  # upstream client spans and traceparent (None: tracing is off)
        self.registry = registry
        self.failover = registry.failover
        self.server = server
        self.turns = turns if turns is not None else MemoryTurnStore(server.parked_turns_ttl_seconds)
        self.fields = declared_fields(pm)
        self.request_type = extend_request(self.fields)
        self._decoder = msgspec.json.Decoder(self.request_type)
        self._unset_fields = {f.name: UNSET for f in self.fields}
        # HookRunner: the same calls as pm.hook.<name>(...), without pluggy's generic per-call overhead.
        self._resolve = pm.runner("resolve_target")
        self._prompt = pm.runner("build_system_prompt") if pm.implements("build_system_prompt") else None
        self._retrieve = pm.runner("retrieve_context") if pm.implements("retrieve_context") else None
        self._list_tools = pm.runner("list_tools") if pm.implements("list_tools") else None
        self._run_tools = pm.runner("run_tools") if pm.implements("run_tools") else None
        self._post = pm.runner("post_process") if pm.implements("post_process") else None
        self._bot_defaults: dict[tuple[str, str], dict[str, Any]] = {}
        self.access: Access | None = None  # usage records, limits, allow-lists (set by Services)

    @property
    def max_team_depth(self) -> int:
        return self.server.max_team_depth

    # -- request preparation ---------------------------------------------------------------------

    def decode(self, body: bytes) -> ChatCompletionRequest:
        """Decode a chat completion body once, with the fields plugins declared; a 400 on any problem."""
        return decode_chat_request(body, self._decoder)

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
        ctx.runtime = self
        if ctx.depth == 0 and self.access is not None:
            self.access.check_model(ctx, request.model)
        target = self.resolve(request.model, ctx.workspace)
        echo = ctx.state.get(ECHO_SELECTOR) if ctx.state else None
        if echo is not None:  # e.g. conversation/id=...: the response names what the client addressed
            target = msgspec.structs.replace(target, selector=echo)
        ctx.target = target
        observation = ctx.observation
        if not ctx.depth:  # the client's request (team members share their lead's observation)
            observation.target_kind = target.kind
            observation.provider = target.provider.id
            observation.model = target.model
            if target.bot is not None:
                observation.bot_id = target.bot.id
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
            started = perf_counter()
            for result in await self._gather(self._retrieve(ctx=ctx)):
                ctx.sources.extend(s for s in result or () if isinstance(s, Source))
            if not ctx.depth:
                observation.context_seconds += perf_counter() - started
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

        changes: dict[str, Any] = {"model": target.model, "messages": messages, "chorus_progress": UNSET}
        if request.store is not UNSET or request.metadata is not UNSET:  # read by Chorus, never forwarded
            changes["store"] = changes["metadata"] = UNSET
        if type(request) is self.request_type and self._unset_fields:
            changes.update(self._unset_fields)  # plugin-owned fields never reach the upstream
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
        names = frozenset(tool_name(t) or "" for t in server_tools)
        if server_tools:
            # Server tools win a name clash: the client's same-named tool is not offered.
            client_tools = [
                t for t in (request.tools if isinstance(request.tools, list) else [])
                if not isinstance(t, dict) or tool_name(t) not in names
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

    async def _execute_tools(self, ctx: RequestContext, calls: list[dict[str, Any]]) -> dict[str, str]:
        """Run the server-side calls of one assistant turn; results keyed by tool call id."""
        merged: dict[str, str] = {}
        if self._run_tools is None or not calls:
            return merged
        for result in await self._gather(self._run_tools(ctx=ctx, tool_calls=calls)):
            if result:
                merged.update(result)
        return merged

    # -- upstream calls: timed, counted and traced -------------------------------------------------

    async def _upstream_complete(self, ctx: RequestContext, target: Target, body: ChatCompletionRequest) -> dict[str, Any]:
        """``provider.complete``, timed into the observation (and a client span when tracing)."""
        tracing = self.tracing
        span = tracing.upstream(ctx, target) if tracing is not None else None
        started = perf_counter()
        try:
            response = await self.failover.complete(target, body, ctx)
        except BaseException as exc:
            self._upstream_end(ctx, started, span, None, exc)
            raise
        self._upstream_end(ctx, started, span, response, None)
        return response

    def _upstream_end(self, ctx: RequestContext, started: float, span: Any, answer: dict[str, Any] | None,
                      error: BaseException | None) -> None:
        """Count one model call; the client's request's calls add their time (members' run inside tools)."""
        observation = ctx.observation
        observation.upstream_calls += 1
        if not ctx.depth:
            observation.upstream_seconds += perf_counter() - started
            if answer is not None:
                model = answer.get("model")
                if isinstance(model, str):
                    observation.response_model = model
        if span is not None and self.tracing is not None:
            self.tracing.upstream_done(ctx, span, answer, error)

    def _agent(self, ctx: RequestContext, prepared: Prepared, keepalive: float | None) -> AgentLoop:
        return AgentLoop(ctx, prepared, run_tools=self._execute_tools, turns=self.turns, keepalive=keepalive)

    # -- non-streaming ---------------------------------------------------------------------------

    async def complete_json(self, ctx: RequestContext) -> bytes:
        """Run a non-streaming request and return the encoded ``chat.completion``."""
        return _encode(await self.complete(ctx))

    def finish(self, ctx: RequestContext, status: str) -> None:
        """The client's request ended: record its usage (hidden steps and team members included).

        Called once per client request by :meth:`complete` and :meth:`stream`, so every API that
        runs requests through them (chat completions, the Responses API) is accounted the same way.
        """
        if self.access is not None:
            try:
                self.access.finish(ctx, status)
            except Exception:  # accounting must never turn an answer into an error
                log.exception("request %s: recording its usage failed", ctx.request_id)

    async def complete(self, ctx: RequestContext) -> dict[str, Any]:
        """Run a non-streaming request; the ``chat.completion`` as a dict (team members use this).

        The client's own request (``ctx.depth == 0``, whichever API it came through) has its usage
        recorded when it ends (:meth:`finish`); a team member's calls are in its parent's ledger.
        """
        if ctx.depth:
            return await self._complete(ctx)
        try:
            response = await self._complete(ctx)
        except BaseException as exc:
            self.finish(ctx, outcome(exc))
            raise
        self.finish(ctx, "ok")
        return response

    async def _complete(self, ctx: RequestContext) -> dict[str, Any]:
        prepared = await self.prepare(ctx)
        target = ctx.target
        assert target is not None
        steps = 0
        if not prepared.server_tools:
            spend(ctx)
            response = check_completion(await self._upstream_complete(ctx, target, prepared.body), target.provider.id)
            account(ctx, target, response.get("usage"))
        else:
            agent = self._agent(ctx, prepared, None)
            async for _ in agent.run(self._complete_call(ctx, target, self._upstream_complete)):
                pass
            turn, steps = agent.turn, agent.steps
            response = turn.response
            _settle_message(turn)
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

    @staticmethod
    def _complete_call(ctx: RequestContext, target: Target, upstream: Any) -> ModelCall:
        async def call(body: ChatCompletionRequest, turn: Turn) -> AsyncIterator[bytes]:
            response = check_completion(await upstream(ctx, target, body), target.provider.id)
            account(ctx, target, response.get("usage"))
            turn.response = response
            choices = response.get("choices") or []
            choice = turn.choice = choices[0] if choices and isinstance(choices[0], dict) else {}
            message = choice.get("message") or {}
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            turn.calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
            turn.content = message.get("content") if isinstance(message, dict) else None
            turn.finish = choice.get("finish_reason")
            for event in _NO_EVENTS:  # an async generator that relays nothing: the answer is sent whole
                yield event

        return call

    # -- streaming -------------------------------------------------------------------------------

    async def stream(self, ctx: RequestContext) -> AsyncGenerator[bytes, None]:
        """Yield SSE events for a streaming request.

        Errors before the first event propagate (the caller turns them into an HTTP status);
        errors after it end the stream with an ``error`` event and no ``[DONE]``.
        """
        status = "cancelled"
        started = False
        try:
            prepared = await self.prepare(ctx)
            async for event in self._stream_events(ctx, prepared):
                started = True
                yield event
        except ChorusError as exc:
            status = outcome(exc)
            if not started:
                raise
            log.warning("request %s: stream failed after start: %s", ctx.request_id, exc.message)
            if not ctx.depth:
                ctx.observation.error = exc.code or exc.error_type
            yield sse(exc.to_dict())
            return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            status = "error"
            if not started:
                raise
            log.exception("request %s: stream failed after start", ctx.request_id)
            if not ctx.depth:
                ctx.observation.error = "internal_error"
            error = ChorusError(f"The stream failed (request id {ctx.request_id}).")
            yield sse(error.to_dict())
            return
        else:
            status = "ok"
        finally:
            self.finish(ctx, status)
        yield DONE

    async def _stream_events(self, ctx: RequestContext, prepared: Prepared) -> AsyncIterator[bytes]:
        target = ctx.target
        assert target is not None
        emit = chunk_emitter(ctx, self._post, self._gather)
        if not prepared.server_tools:  # the plain relay: every chunk with choices, shaped and sent
            spend(ctx)
            provider = target.provider.id
            tracing = self.tracing
            span = tracing.upstream(ctx, target) if tracing is not None else None
            started = perf_counter()
            chunk: dict[str, Any] | None = None
            try:
                async for chunk in self.failover.stream(target, prepared.body, ctx):
                    check_chunk(chunk, provider)
                    usage = chunk.get("usage")
                    if usage:
                        account(ctx, target, usage)
                    if chunk.get("choices"):
                        yield await emit(chunk)
            except BaseException as exc:
                self._upstream_end(ctx, started, span, None, exc)
                raise
            self._upstream_end(ctx, started, span, chunk, None)
        else:
            agent = self._agent(ctx, prepared, self.server.keepalive_seconds)
            async for event in agent.run(self._stream_call(ctx, target, emit, self)):
                yield event
            turn = agent.turn
            for index, call in enumerate(turn.client_calls):
                fragment = {"index": index, "id": call["id"], "type": "function", "function": dict(call["function"])}
                yield await emit({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})
            final_choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": turn.finish or "stop"}
            if "logprobs" in turn.choice:
                final_choice["logprobs"] = None
            yield await emit({"choices": [final_choice]})
        if ctx.include_usage:
            final = usage_chunk(ctx)
            await self._post_process(ctx, final, True)
            yield sse(final)

    @staticmethod
    def _stream_call(ctx: RequestContext, target: Target, emit: Emit, pipeline: Pipeline) -> ModelCall:
        """A model call that relays content as it streams and holds back tool calls and the finish."""

        async def call(body: ChatCompletionRequest, turn: Turn) -> AsyncIterator[bytes]:
            fragments: dict[int, dict[str, Any]] = {}
            content: list[str] = []
            provider = target.provider.id
            tracing = pipeline.tracing
            span = tracing.upstream(ctx, target) if tracing is not None else None
            started = perf_counter()
            chunk: dict[str, Any] | None = None
            try:
                async for chunk in pipeline.failover.stream(target, body, ctx):
                    check_chunk(chunk, provider)
                    usage = chunk.get("usage")
                    if usage:
                        account(ctx, target, usage)
                    choices = chunk.get("choices")
                    if not choices:
                        continue
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if delta.get("tool_calls") or choice.get("finish_reason"):
                        accumulate(fragments, delta.get("tool_calls") or ())
                        turn.finish = choice.get("finish_reason") or turn.finish
                        turn.choice = choice
                        if isinstance(text, str) and text:
                            content.append(text)
                            yield await emit({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
                        continue
                    if isinstance(text, str):
                        content.append(text)
                    yield await emit(chunk)
            except BaseException as exc:
                pipeline._upstream_end(ctx, started, span, None, exc)
                raise
            pipeline._upstream_end(ctx, started, span, chunk, None)
            turn.calls = [fragments[i] for i in sorted(fragments)]
            turn.content = "".join(content)

        return call


def _settle_message(turn: Turn) -> None:
    """Non-stream: the message shows only the client's calls (server calls stay hidden)."""
    choice = turn.choice
    message = choice.get("message")
    if not isinstance(message, dict):
        return
    if turn.client_calls != turn.calls:
        if turn.client_calls:
            message["tool_calls"] = turn.client_calls
        else:
            message.pop("tool_calls", None)
    if turn.finish != choice.get("finish_reason"):
        choice["finish_reason"] = turn.finish
