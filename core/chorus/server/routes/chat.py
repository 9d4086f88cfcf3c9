"""``POST /v1/chat/completions`` (also served without ``/v1``): the hot path.

This is a Litestar ``asgi`` route handler rather than a ``@post`` one: it reads the body, builds the
response and sends it with plain ASGI messages, so a chat request skips Litestar's per-request
``Request``/signature-model/``Response`` machinery (about a fifth of the CPU a request cost). It
keeps what the ``@post`` handler did, byte for byte:

* errors are raised, so Litestar's exception handlers (``chorus.app``) answer with the OpenAI
  envelope; ``x-request-id`` is still added by the app's ``before_send`` hook;
* the body limit (``server.max_body_bytes``) is enforced like Litestar's ``Request.body()``:
  an announced ``content-length`` over the limit and a body that grows over it are both 413;
* methods other than ``POST`` get the same 405 envelope, and ``OPTIONS`` the same 204 with
  ``allow: OPTIONS, POST``, as Litestar's router gives ``@post`` routes;
* a ``Content-Type`` that is not JSON is a 415 (none at all is read as JSON);
* ``x-chorus-upstream: <provider>/<model>`` names the upstream that answered (a fallback, when the
  primary failed), streamed or not;
* a client that disconnects cancels the upstream work at every stage: while its body arrives
  (:class:`~chorus.server.body.ClientGone`, 499), while the answer is prepared, before the first
  event of a stream and during one (the stream stops and the upstream connection is closed),
  during hidden tool steps.

Disconnect watching costs one small task per request (:class:`DisconnectWatch`): the request's
own task runs the pipeline and the watcher cancels it if ``http.disconnect`` arrives first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from time import perf_counter
from typing import Any, Self

from litestar.exceptions import HTTPException, MethodNotAllowedException
from litestar.handlers import asgi

from chorus.contract.context import RequestContext
from chorus.contract.errors import ChorusError
from chorus.contract.observe import Observation
from chorus.runtime.observe import Observer
from chorus.runtime.pipeline import Pipeline
from chorus.runtime.responses.chats import ChatFollowUp
from chorus.server.auth import RATE_LIMIT_HEADERS, identify
from chorus.server.body import ClientGone, check_json_type, read_body
from chorus.server.requestid import request_id

log = logging.getLogger("chorus")

PATHS = ["/v1/chat/completions", "/chat/completions"]
JSON = "application/json"
_JSON_HEADER = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_UPSTREAM = b"x-chorus-upstream"  # which upstream answered: "<provider>/<model>"
_OPTIONS_START: dict[str, Any] = {"type": "http.response.start", "status": 204, "headers": [(b"allow", b"OPTIONS, POST")]}
_EMPTY_END: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}
_TRUTHY = ("1", "true", "yes")
_WANTED = frozenset({b"authorization", b"content-length", b"content-type", b"x-chorus-progress", b"traceparent",
                     b"tracestate"})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class DisconnectWatch:
    """Cancel the current task when the client disconnects; one watcher task, no ``asyncio.wait``.

    Use as ``with DisconnectWatch(receive) as watch:``; after a cancellation, :attr:`gone` tells
    whether it was the client leaving (then :meth:`absorb` turns it back into normal control flow)
    or something else (server shutdown), which must propagate.
    """

    __slots__ = ("_receive", "_task", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> Self:
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop watching (before the response completes: uvicorn then reports a disconnect)."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def absorb(self) -> None:
        """The client left and cancelled us: undo the cancellation request on this task."""
        if self._task is not None:
            self._task.uncancel()


@asgi(PATHS, copy_scope=False, name="chat_completions")
async def chat_completions(scope: Any, receive: Receive, send: Send) -> None:
    """Authenticate, decode once, run the pipeline; stream when ``stream`` is true."""
    method = scope["method"]
    if method == "OPTIONS":
        await send(dict(_OPTIONS_START, headers=list(_OPTIONS_START["headers"])))
        await send(dict(_EMPTY_END))
        return
    if method != "POST":
        raise MethodNotAllowedException()
    state = scope["app"].state
    pipeline: Pipeline = state.pipeline
    found: dict[bytes, str] = {}  # the first value of each header we use, as Litestar's Headers.get gives
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _WANTED and name not in found:
            found[name] = value.decode("latin-1")
    await observed_call(scope, "chat", found,
                        lambda observation, made: _chat(scope, receive, send, pipeline, found, observation, made))


async def observed_call(scope: Any, route: str, found: dict[bytes, str],
                        run: Callable[[Observation, list[RequestContext]], Awaitable[None]]) -> None:
    """``run(observation, made)`` observed as ``route``: status, tokens of the context ``run`` appends
    to ``made`` (even after a failure), the server span when tracing is on; finished exactly once."""
    observer: Observer = scope["app"].state.observer
    observation = observer.start(route)
    observation.request_id = request_id(scope)
    tracing = observer.tracing
    span = (tracing.begin(observation, "POST", scope["path"], found.get(b"traceparent"), found.get(b"tracestate"))
            if tracing is not None else None)
    made: list[RequestContext] = []
    try:
        await run(observation, made)
    except BaseException as exc:
        _failed(observation, exc)
        raise
    finally:
        if made:
            ctx = made[0]
            if ctx.usage is not None:
                observation.input_tokens = ctx.usage["prompt_tokens"]
                observation.output_tokens = ctx.usage["completion_tokens"]
            cost = ctx.ledger.cost_nanos  # priced calls only (hidden steps and team members included)
            if cost:
                observation.cost = cost / 1e9
        if span is not None and tracing is not None:
            tracing.end(observation, span)
        observer.finish(observation)


#: Limit errors as the observation's ``rejection`` (chorus_rejections_total and the request log).
_REJECTIONS = {"rate_limit_exceeded": "rate_limit", "insufficient_quota": "budget"}


def _failed(observation: Observation, exc: BaseException) -> None:
    """The status and error code a request that raised ``exc`` is answered with (the app's handlers)."""
    if isinstance(exc, ChorusError):
        observation.status, observation.error = exc.status_code, exc.code or exc.error_type
        if exc.code in _REJECTIONS:
            observation.rejection = _REJECTIONS[exc.code]
    elif isinstance(exc, ClientGone | asyncio.CancelledError):
        observation.status, observation.error = 499, "client_gone"
    elif isinstance(exc, HTTPException):
        observation.status, observation.error = exc.status_code, "http_" + str(exc.status_code)
    else:
        observation.status, observation.error = 500, "internal_error"


async def _chat(scope: Any, receive: Receive, send: Send, pipeline: Pipeline, found: dict[bytes, str],
                observation: Observation, made: list[RequestContext]) -> None:
    state = scope["app"].state
    authorization = found.get(b"authorization")
    content_length = found.get(b"content-length")
    progress_header = found.get(b"x-chorus-progress")
    caller = await identify(pipeline.registry, authorization)
    observation.workspace, observation.key_id = caller.workspace.id, caller.key_id
    if caller.subjects:  # a limited key: counted now, its x-ratelimit-* headers on whatever answer it gets
        access = pipeline.access
        assert access is not None
        scope[RATE_LIMIT_HEADERS] = await access.admit(caller)
    check_json_type(found.get(b"content-type"))
    body = await read_body(receive, content_length, state.max_body_bytes)
    chat = pipeline.decode(body)
    follow: ChatFollowUp | None = None
    if chat.store is True or chat.model.startswith("conversation/"):  # opt-in: the only chat requests that touch the store
        chat, follow = await ChatFollowUp.open(state.responses.store, chat, caller.workspace)
    observation.selector = chat.model
    ctx = RequestContext(request_id=observation.request_id, workspace=caller.workspace, registry=pipeline.registry,
                         request=chat, observation=observation)
    ctx.key_id = caller.key_id
    observation.stream = ctx.stream
    made.append(ctx)
    if chat.chorus_progress is True or (progress_header is not None and progress_header.lower() in _TRUTHY):
        ctx.state["progress"] = True
    if follow is not None:
        follow.bind(ctx)
    if not ctx.stream:
        with DisconnectWatch(receive) as watch:
            try:
                content = await (pipeline.complete_json(ctx) if follow is None else follow.complete_json(pipeline, ctx))
            except asyncio.CancelledError:
                if not watch.gone:
                    raise
                watch.absorb()
                raise ClientGone("while its answer was prepared; upstream work cancelled") from None
        headers = [_JSON_HEADER, (b"content-length", str(len(content)).encode())]
        if ctx.upstream is not None:
            headers.append((_UPSTREAM, ctx.upstream.encode("latin-1", "replace")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})
        return
    await stream_response(pipeline, ctx, receive, send, None if follow is None else follow.stream(pipeline, ctx))


async def stream_response(pipeline: Pipeline, ctx: RequestContext, receive: Receive, send: Send,
                          events: AsyncGenerator[bytes, None] | None = None) -> None:
    """Relay the pipeline's SSE events (or ``events``); errors before the first event become a normal HTTP error.

    The client is watched from the start: one that leaves while the model thinks (before the first
    event) cancels the upstream request as surely as one that leaves mid-stream.
    """
    if events is None:
        events = pipeline.stream(ctx)
    with DisconnectWatch(receive) as watch:
        try:
            first = await anext(events)
            headers = list(_SSE_HEADERS)
            if ctx.upstream is not None:
                headers.append((_UPSTREAM, ctx.upstream.encode("latin-1", "replace")))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            ctx.observation.first_event = perf_counter()
            await relay(events, send)
            watch.stop()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.absorb()  # the client left: the stream just stops (the upstream is closed below)
            ctx.observation.status, ctx.observation.error = 499, "client_gone"
            log.info("request %s: client disconnected from its stream; upstream work cancelled", ctx.request_id)
        finally:
            await events.aclose()


MAX_BATCH = 16  # events per write at most, when the upstream sends faster than one write per event


async def relay(events: AsyncGenerator[bytes, None], send: Send) -> None:
    """Send every event as soon as the next one is not ready; events ready together go in one write.

    Each event is still produced and sent in order, unchanged. The difference from one ASGI message
    per event: when the upstream delivers a burst (several SSE events in one network read, as fast
    upstreams and the benchmark's mock do), the events of the burst that are ready without waiting
    leave in one ``http.response.body`` message (one socket write) instead of one each. An event is
    never held back waiting for a later one: the batch is sent the moment fetching the next event
    would wait for the network. At most :data:`MAX_BATCH` events are batched.

    The next event is fetched by stepping the generator's ``__anext__`` awaitable by hand in this
    task (no extra task): if it completes at once the event joins the batch; if it has to wait, the
    batch is sent first and then the awaitable is awaited as usual (:class:`_Started`).
    """
    batch: list[bytes] = []
    while True:
        step = events.__anext__()
        try:
            waiting_on = step.send(None)
        except StopIteration as ready:
            batch.append(ready.value)
            if len(batch) >= MAX_BATCH:
                await send({"type": "http.response.body", "body": b"".join(batch), "more_body": True})
                batch = []
            continue
        except StopAsyncIteration:
            break
        if batch:
            try:
                await send({"type": "http.response.body", "body": b"".join(batch), "more_body": True})
            except BaseException as exc:
                await _abandon(step, exc)
                raise
            batch = []
        batch.append(await _Started(step, waiting_on))
    if batch:
        await send({"type": "http.response.body", "body": b"".join(batch), "more_body": True})


class _Started:
    """Await the rest of an awaitable whose first step already ran and yielded ``waiting_on``.

    Exactly what ``await`` would have done from there: the yielded future goes up to this task,
    results and exceptions (cancellation) are passed back down.
    """

    __slots__ = ("_step", "_waiting_on")

    def __init__(self, step: Any, waiting_on: Any) -> None:
        self._step = step
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        step, waiting_on = self._step, self._waiting_on
        while True:
            try:
                value = yield waiting_on
            except BaseException as exc:
                try:
                    waiting_on = step.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                waiting_on = step.send(value)
            except StopIteration as done:
                return done.value


async def _abandon(step: Any, exc: BaseException) -> None:
    """Deliver ``exc`` (e.g. the cancellation of a client that left) to a started step and finish it."""
    try:
        waiting_on = step.throw(exc)
    except BaseException:
        return
    try:
        await _Started(step, waiting_on)
    except BaseException:
        return
