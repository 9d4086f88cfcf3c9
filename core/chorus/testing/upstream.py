"""A scripted fake OpenAI-compatible upstream for end-to-end tests.

`ScriptedUpstream` runs a real HTTP server (uvicorn, raw ASGI app) on
``127.0.0.1:<free port>`` in a background thread with its own event loop. Tests
script what ``POST /v1/chat/completions`` answers by pushing response objects onto a
FIFO queue; every incoming chat request consumes one (an empty queue answers
``Reply(content="ok")``). Every request is recorded in `ScriptedUpstream.requests`.

Example::

    from chorus.testing.upstream import Error, Reply, ScriptedUpstream

    with ScriptedUpstream() as up:
        up.push(Reply("Hello world", chunk_delay=0.01), Error(429, "slow down", type="rate_limit_error"))
        client = openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0)
        stream = client.chat.completions.create(model="m", messages=[...], stream=True)
        ...                                    # "Hello", " world", finish_reason "stop", [DONE]
        assert up.wait_streams_completed(1)    # the server side finished that stream too
        assert up.requests[0].json["model"] == "m"
        # the next chat request gets HTTP 429 with an OpenAI error envelope

Response kinds: `Reply` (JSON or SSE, depending on the request's ``"stream"``),
`Error`, `Hang`, `Drop` (also mid-body), `RawStream` and `RawBody` (any bytes as the
answer: garbage, the wrong shape, a huge body).

Failover scripts: ``push(Error(503), Reply("ok"))`` is a 503 then a success;
``Error(429, headers={"retry-after": "1"})`` a rate limit with ``Retry-After``; ``Hang(30)`` an
upstream that hangs before its first byte; a provider on :func:`chorus.testing.server.free_port`
is a refused connection. Each request's `Recorded.at` (a monotonic time) proves when it came.
``ScriptedUpstream(ssl_certfile=..., ssl_keyfile=...)`` serves HTTPS (e.g. with a ``trustme`` CA).

Minimal answers: ``Reply(minimal=True)``, or ``ScriptedUpstream(minimal=True)`` for every
reply and embedding, leaves out every field the OpenAI spec marks optional and the required
ones that Ollama, vLLM or llama.cpp servers omit (``id``, ``object``, ``created``,
``model``, ``usage``, ``index``, ``logprobs``, ``refusal``, ``system_fingerprint``, a tool
call's ``type``, an embedding's ``object`` and ``index``): what a gateway must still answer
spec-exactly from.

Streams are counted on the server thread. A stream whose client goes away before it
finishes is a *disconnect*: `wait_for_disconnect` blocks until one is counted. A stream
sent to its end is a *completed stream*: `wait_streams_completed` blocks until ``n`` are
counted. Wait rather than read the `completed_streams` / `disconnects` snapshots right
after a client call: the client can finish reading before the server thread gets to
count. (A completion is counted just before the stream's last event is sent, so by the
time a client has seen a whole stream it is counted; a disconnect is only noticed after
the client left.) ``pytest`` users get a fresh upstream per test from the
``scripted_upstream`` fixture of :mod:`chorus.testing.fixtures`.

Also served: ``GET /v1/models`` (models `MODELS`, "up-a" and "up-b") and
``POST /v1/embeddings`` (deterministic `EMBEDDING_DIM`-dim vectors from a hash of each
input; `push_embeddings` scripts its next answers instead: `Error`, `Hang`, `Drop` or
`RawBody`). Anything else is a 404 error envelope.

Disconnect detection: once the request body is read, a listener task awaits ASGI
``receive()``; uvicorn hands it ``http.disconnect`` when the client's connection
closes. Sleeps (``delay``, ``chunk_delay``, `Hang`) wake early on that event or on
`ScriptedUpstream.stop`, so neither a gone client nor shutdown waits for a long sleep.

This module depends on the standard library and uvicorn (a Chorus dependency) only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = [
    "DEFAULT_USAGE",
    "EMBEDDING_DIM",
    "MODELS",
    "Drop",
    "Error",
    "Hang",
    "RawBody",
    "RawStream",
    "Recorded",
    "Reply",
    "ScriptedResponse",
    "ScriptedUpstream",
]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_USAGE: dict[str, int] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
MODELS: tuple[str, ...] = ("up-a", "up-b")
EMBEDDING_DIM = 8


@dataclass
class Reply:
    """A successful chat completion; streamed as SSE when the request has ``"stream": true``.

    ``tool_calls`` use the OpenAI message shape. ``finish_reason`` defaults to
    ``"tool_calls"``/``"stop"``, ``usage`` to `DEFAULT_USAGE`. ``chunks`` splits the
    streamed content into that many pieces (default: one per word, leading spaces
    kept). ``delay`` is slept before the response head, ``chunk_delay`` between SSE
    events. ``extra`` is merged into the top level of the completion / every chunk.
    ``drop_after`` (streams only) sends that many SSE events, then closes the
    connection mid-body (no ``[DONE]``, broken chunked encoding). ``minimal`` leaves out every
    optional field (see the module docstring).
    """

    content: str | None = "ok"
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    chunks: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    extra: dict[str, Any] | None = None
    drop_after: int | None = None
    headers: dict[str, str] | None = None
    gate: Callable[[], bool] | None = None  # hold the reply until this is true (at most 5 s)
    minimal: bool = False


@dataclass
class Error:
    """An OpenAI error envelope ``{"error": {message, type, param, code}}`` with ``status``."""

    status: int
    message: str = "bad"
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    delay: float = 0.0
    headers: dict[str, str] | None = None


@dataclass
class Hang:
    """Sleep ``seconds`` (ended early by client disconnect or `stop()`), then answer ``reply``."""

    seconds: float
    reply: Reply = field(default_factory=Reply)


@dataclass
class Drop:
    """Close the connection without sending any response (after ``delay``).

    With ``mid_body``, send the head of a 200 answer (its ``content-length`` announcing a whole
    chat completion) and half of that body first: the connection breaks in the middle of the answer.
    """

    delay: float = 0.0
    mid_body: bool = False


@dataclass
class RawStream:
    """Send SSE events verbatim-ish: each string is framed as ``data: <s>\\n\\n``, unless it
    already ends with a newline, in which case it is sent byte-for-byte. No ``[DONE]``
    is added (include ``"[DONE]"`` yourself)."""

    events: list[str]
    chunk_delay: float = 0.0


@dataclass
class RawBody:
    """Answer with these bytes as the body, whatever the request (streamed or not): garbage, JSON of
    the wrong shape, a huge answer. ``content_type`` and ``status`` are sent as given; the body is
    framed with its ``content-length`` (``chunked=True``: chunked encoding, in pieces of at most
    64 KiB, and no length announced)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    chunked: bool = False
    headers: dict[str, str] | None = None


ScriptedResponse = Reply | Error | Hang | Drop | RawStream | RawBody


@dataclass(frozen=True)
class Recorded:
    """One request as the upstream received it (``headers`` keys are lowercase).

    ``at`` is :func:`time.monotonic` when its body had arrived (the clock every process of the machine
    shares): compare two requests' ``at`` to prove an order or a wait without timing the test itself.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = b""
    query: str = ""
    at: float = 0.0


def _error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
                param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _split_even(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` contiguous, non-empty, near-equal pieces."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, rest = divmod(len(text), parts)
    out, pos = [], 0
    for i in range(parts):
        n = size + (i < rest)
        out.append(text[pos:pos + n])
        pos += n
    return out


def _split_words(text: str) -> list[str]:
    """One piece per word, each keeping its leading whitespace: "a b" -> ["a", " b"]."""
    return re.findall(r"\s*\S+|\s+\Z", text)


def _fake_embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:EMBEDDING_DIM]]


class ScriptedUpstream:
    """Fake OpenAI-compatible upstream server; see the module docstring.

    Thread-safe: `push`, `reset`, `requests`, the counters and the ``wait_*`` methods
    may be used from the test thread while the server thread serves requests.
    """

    def __init__(self, host: str = "127.0.0.1", graceful_shutdown: float = 1.0, *, minimal: bool = False,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        self.host = host
        #: serve HTTPS with this certificate and key (``base_url`` is then ``https://``)
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.graceful_shutdown = graceful_shutdown
        #: Render every `Reply` and embedding minimal (see the module docstring); may be changed any time.
        self.minimal = minimal
        self._minimal_default = minimal
        self.requests: list[Recorded] = []
        self._queue: deque[ScriptedResponse] = deque()
        self._embeddings: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._disconnects = 0
        self._disconnects_seen = 0
        self._completed = 0
        self._port: int | None = None
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ScriptedUpstream is not started")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> ScriptedUpstream:
        if self._thread is not None:
            raise RuntimeError("ScriptedUpstream already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self._sock, self._port = sock, sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, interface="asgi3", lifespan="off", log_config=None, access_log=False, ws="none",
            timeout_graceful_shutdown=self.graceful_shutdown,  # type: ignore[arg-type]  # seconds, a float is fine
            ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"scripted-upstream:{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ScriptedUpstream failed to start: {self._failure!r}")
            time.sleep(0.002)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down; in-flight sleeps end at once, so this takes ~0.2s, not a whole `Hang`."""
        thread, server, loop, stopping = self._thread, self._server, self._loop, self._stopping
        if thread is None or server is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        server.should_exit = True
        thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._server = self._loop = self._stopping = None
        if thread.is_alive():
            raise RuntimeError("ScriptedUpstream thread did not stop")

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            assert self._server is not None and self._sock is not None
            await self._server.serve(sockets=[self._sock])

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self._failure = exc

    # ------------------------------------------------------------------ scripting & inspection

    def push(self, *responses: ScriptedResponse) -> None:
        """Queue responses; each POST /v1/chat/completions consumes one, in order."""
        with self._lock:
            self._queue.extend(responses)

    def push_embeddings(self, *responses: Error | Hang | Drop | RawBody) -> None:
        """Queue answers of ``POST /v1/embeddings`` (each request consumes one; then the usual vectors)."""
        with self._lock:
            self._embeddings.extend(responses)

    def reset(self) -> None:
        """Clear the queues, the recorded requests and the stream counters; `minimal` is as constructed again."""
        self.minimal = self._minimal_default
        with self._lock:
            self._queue.clear()
            self._embeddings.clear()
            self.requests.clear()
        with self._cond:
            self._disconnects = self._disconnects_seen = self._completed = 0

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        with self._lock:
            return len(self._queue)

    @property
    def disconnects(self) -> int:
        """Streaming responses whose client went away before the stream completed (a snapshot)."""
        with self._cond:
            return self._disconnects

    @property
    def completed_streams(self) -> int:
        """Streaming responses sent to the end (``[DONE]`` / last RawStream event), a snapshot.

        To check that streams completed, use `wait_streams_completed`: it waits for the server
        thread instead of reading a count it may not have updated yet.
        """
        with self._cond:
            return self._completed

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """Block until a stream disconnect not yet claimed by an earlier call is counted.

        Each successful call claims one disconnect, so the disconnect may happen before
        or after the call. Returns False on timeout.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._disconnects > self._disconnects_seen, timeout):
                return False
            self._disconnects_seen += 1
            return True

    def wait_streams_completed(self, n: int = 1, timeout: float = 30.0) -> bool:
        """Block until at least ``n`` streams completed since the start (or the last `reset`).

        Returns True as soon as they have, False after ``timeout`` seconds; unlike
        `wait_for_disconnect`, nothing is claimed, so calling it again with the same ``n``
        returns at once. To assert an exact count, wait first, then read `completed_streams`::

            assert up.wait_streams_completed(2), f"{up.completed_streams} of 2 streams completed"
            assert up.completed_streams == 2
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        with self._cond:
            return self._cond.wait_for(lambda: self._completed >= n, timeout)

    def _bump(self, *, disconnect: bool) -> None:
        with self._cond:
            if disconnect:
                self._disconnects += 1
            else:
                self._completed += 1
            self._cond.notify_all()

    def _uncomplete(self) -> None:
        """The last event of a stream counted as completed failed to send: a disconnect after all."""
        with self._cond:
            self._completed -= 1
            self._disconnects += 1
            self._cond.notify_all()

    def _next(self) -> ScriptedResponse:
        with self._lock:
            return self._queue.popleft() if self._queue else Reply()

    # ------------------------------------------------------------------ ASGI app

    async def _app(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        record = Recorded(method, path, headers, payload, bytes(body), scope.get("query_string", b"").decode(),
                          time.monotonic())
        with self._lock:
            self.requests.append(record)

        if method == "POST" and path == "/v1/chat/completions":
            gone = asyncio.Event()
            listener = asyncio.create_task(self._listen(receive, gone))
            try:
                await self._chat(payload, send, gone)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        elif method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "scripted-upstream"}
                    for m in MODELS]
            await self._json(send, 200, {"object": "list", "data": data})
        elif method == "POST" and path == "/v1/embeddings":
            with self._lock:
                scripted = self._embeddings.popleft() if self._embeddings else None
            if scripted is None:
                await self._embed(payload, send)
            else:
                await self._answer(scripted, payload, send, asyncio.Event(), streaming=False)
        else:
            await self._json(send, 404, _error_body(f"Unknown request URL: {method} {path}", code="unknown_url"))

    @staticmethod
    async def _listen(receive: Receive, gone: asyncio.Event) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    async def _sleep(self, seconds: float, gone: asyncio.Event | None = None) -> None:
        """Sleep, but wake early on client disconnect (``gone``) or server stop."""
        if seconds <= 0:
            return
        events = [e for e in (self._stopping, gone) if e is not None]
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @staticmethod
    async def _json(send: Send, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _drop(send: Send) -> None:
        """Close the TCP connection under uvicorn's feet, without (the rest of) a response."""
        cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
        transport = getattr(cycle, "transport", None)
        if transport is None:  # pragma: no cover - not served by uvicorn
            raise ConnectionAbortedError("scripted drop")  # server closes / 500s
        transport.close()
        for _ in range(20):  # let connection_lost run so uvicorn won't complain or send a 500
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)

    async def _chat(self, req: Any, send: Send, gone: asyncio.Event) -> None:
        if not isinstance(req, dict):
            await self._json(send, 400, _error_body("We could not parse the JSON body of your request."))
            return
        await self._answer(self._next(), req, send, gone, streaming=bool(req.get("stream")))

    async def _answer(self, response: ScriptedResponse, req: Any, send: Send, gone: asyncio.Event, *,
                      streaming: bool) -> None:
        if isinstance(response, Hang):
            await self._sleep(response.seconds, gone)
            response = response.reply
        if isinstance(response, Reply) and response.gate is not None:
            for _ in range(500):
                if response.gate() or gone.is_set():
                    break
                await asyncio.sleep(0.01)
        delay = response.delay if isinstance(response, Reply | Error | Drop) else 0.0
        await self._sleep(delay, gone)
        if gone.is_set():  # the client left while we waited (stream or not)
            self._bump(disconnect=True)
            return
        if isinstance(response, Drop):
            if response.mid_body:
                body = json.dumps(self._completion(Reply(), req if isinstance(req, dict) else {})).encode()
                head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": head})
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            await self._drop(send)
        elif isinstance(response, RawBody):
            await self._raw(send, response)
        elif isinstance(response, Error):
            envelope = _error_body(response.message, response.type, response.code, response.param)
            await self._json(send, response.status, envelope, response.headers)
        elif isinstance(response, RawStream):
            frames = [(e if e.endswith("\n") else f"data: {e}\n\n").encode() for e in response.events]
            await self._stream(send, gone, frames, response.chunk_delay)
        elif streaming:
            frames = [f"data: {json.dumps(c)}\n\n".encode() for c in self._chunks(response, req)]
            frames.append(b"data: [DONE]\n\n")
            await self._stream(send, gone, frames, response.chunk_delay, response.drop_after, response.headers)
        else:
            await self._json(send, 200, self._completion(response, req), response.headers)

    async def _stream(self, send: Send, gone: asyncio.Event, frames: list[bytes], chunk_delay: float,
                      drop_after: int | None = None, headers: dict[str, str] | None = None) -> None:
        head = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                await self._sleep(chunk_delay, gone)
            if gone.is_set():
                self._bump(disconnect=True)
                return
            if drop_after is not None and i >= drop_after:
                await self._drop(send)
                return
            if i == last:  # count the completion before a client can have seen the whole stream
                self._bump(disconnect=False)
            try:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            except OSError:  # some servers raise once the client is gone
                if i == last:
                    self._uncomplete()
                else:
                    self._bump(disconnect=True)
                return
        if last < 0:  # no events at all: the (empty) stream is complete once its head is out
            self._bump(disconnect=False)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _raw(send: Send, raw: RawBody) -> None:
        head = [(b"content-type", raw.content_type.encode())]
        if not raw.chunked:
            head.append((b"content-length", str(len(raw.body)).encode()))
        head += [(k.lower().encode(), v.encode()) for k, v in (raw.headers or {}).items()]
        await send({"type": "http.response.start", "status": raw.status, "headers": head})
        if not raw.chunked:
            await send({"type": "http.response.body", "body": raw.body})
            return
        step = 64 * 1024
        for start in range(0, len(raw.body), step):
            try:
                await send({"type": "http.response.body", "body": raw.body[start:start + step], "more_body": True})
            except OSError:  # the client stopped reading (e.g. a body over its size cap)
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ------------------------------------------------------------------ payloads

    @staticmethod
    def _base(req: dict[str, Any], obj: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": obj, "created": int(time.time()),
                "model": str(req.get("model") or "scripted"), "system_fingerprint": "fp_scripted"}

    @staticmethod
    def _finish(reply: Reply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def _completion(self, reply: Reply, req: dict[str, Any]) -> dict[str, Any]:
        if reply.minimal or self.minimal:
            bare: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.tool_calls:
                bare["tool_calls"] = [{k: v for k, v in call.items() if k != "type"} for call in reply.tool_calls]
            n = int(req.get("n") or 1)
            bare_choices = [{"message": bare, "finish_reason": self._finish(reply)} | ({"index": c} if n > 1 else {})
                            for c in range(n)]
            return {"choices": bare_choices} | (reply.extra or {})
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        choices = [{"index": i, "message": message, "finish_reason": self._finish(reply), "logprobs": None}
                   for i in range(int(req.get("n") or 1))]
        usage = reply.usage or DEFAULT_USAGE
        return self._base(req, "chat.completion") | {"choices": choices, "usage": usage} | (reply.extra or {})

    def _chunks(self, reply: Reply, req: dict[str, Any]) -> list[dict[str, Any]]:
        content = reply.content
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "" if content is not None else None}]
        pieces = _split_even(content, reply.chunks) if content and reply.chunks else _split_words(content or "")
        deltas += [{"content": piece} for piece in pieces]
        for i, call in enumerate(reply.tool_calls or []):
            fn = call.get("function", {})
            deltas.append({"tool_calls": [{"index": i, "id": call.get("id"), "type": call.get("type", "function"),
                                           "function": {"name": fn.get("name"), "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": part}}]}
                       for part in _split_even(fn.get("arguments", ""), 3)]
        n = int(req.get("n") or 1)
        if reply.minimal or self.minimal:
            for delta in deltas:
                for call in delta.get("tool_calls", ()):
                    call.pop("type", None)
            # several choices need their index to be told apart; one choice goes without
            index: list[dict[str, Any]] = [{"index": c} if n > 1 else {} for c in range(n)]
            bare: list[dict[str, Any]] = [{"choices": [{"delta": d} | index[c]]} for d in deltas for c in range(n)]
            bare += [{"choices": [{"delta": {}, "finish_reason": self._finish(reply)} | index[c]]} for c in range(n)]
            return [chunk | (reply.extra or {}) for chunk in bare]
        choices: list[list[dict[str, Any]]] = [
            [{"index": c, "delta": d, "logprobs": None, "finish_reason": None}] for d in deltas for c in range(n)
        ]
        choices += [[{"index": c, "delta": {}, "logprobs": None, "finish_reason": self._finish(reply)}]
                    for c in range(n)]
        base, extra = self._base(req, "chat.completion.chunk"), reply.extra or {}
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        usage: dict[str, Any] = {"usage": None} if include_usage else {}
        out = [base | {"choices": ch} | usage | extra for ch in choices]
        if include_usage:
            out.append(base | {"choices": [], "usage": reply.usage or DEFAULT_USAGE} | extra)
        return out

    async def _embed(self, req: Any, send: Send) -> None:
        if not isinstance(req, dict) or "input" not in req:
            await self._json(send, 400, _error_body("'input' is a required property", param="input"))
            return
        inputs = req["input"]
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        texts = [s if isinstance(s, str) else json.dumps(s) for s in inputs]
        data = []
        for i, text in enumerate(texts):
            vector: Any = _fake_embedding(text)
            if req.get("encoding_format") == "base64":  # what the openai SDK asks for by default
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"embedding": vector} if self.minimal else {"object": "embedding", "index": i, "embedding": vector})
        if self.minimal:
            await self._json(send, 200, {"data": data})
            return
        tokens = sum(max(1, len(t.split())) for t in texts)
        await self._json(send, 200, {"object": "list", "data": data, "model": str(req.get("model") or "scripted"),
                                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
