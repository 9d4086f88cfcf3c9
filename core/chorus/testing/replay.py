"""A loopback HTTP/1.1 server that checks each request against a recording and replays the answer.

For testing drivers that call an HTTP API (search engines, tools, providers) without the network
or a key: point the driver's ``base_url`` at :attr:`ReplayServer.url`, queue the exchanges the
test expects, and let the server check every request and answer it.

A recording is a JSON file holding one exchange; every ``request`` key but ``path`` is optional::

    {"request": {"method": "GET", "path": "/res/v1/web/search",    # method defaults to GET
                 "query": {"q": "kubernetes gateway api", "count": "5"},   # the exact query string
                 "json": {"query": "...", "max_results": 5},         # the exact JSON body
                 "headers": {"x-subscription-token": "{api_key}"}},  # these must be sent as given
     "response": {"status": 200,                                     # default 200
                  "headers": {"content-type": "application/json"},   # the default when absent
                  "json": {...}}}                                    # or "text": "..."

``{name}`` in expected header values is filled from :func:`load`'s keyword arguments, so a
recording never holds a real key. An error scenario that needs no recording is an
:class:`Exchange` built in the test, e.g. ``Exchange(path="/search", status=502, body=b"...")``;
:meth:`Exchange.but` varies a recording (another expected ``query``, a ``delay`` past the
driver's timeout).

The server runs in the test's own event loop, answers the queued exchanges in order and keeps
connections alive (so :attr:`Received.peer` shows whether a driver pools its connections). A
request that does not match its exchange, or arrives with none queued, is answered ``418`` and
its problems are kept in :attr:`ReplayServer.mismatches`; :meth:`ReplayServer.verify`, run on
leaving ``async with ReplayServer() as server:``, fails when there are any or when a queued
exchange was never requested. A pytest fixture::

    @pytest.fixture
    async def server() -> AsyncIterator[ReplayServer]:
        async with ReplayServer() as replay:
            yield replay
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["UNCHECKED", "Exchange", "Received", "ReplayServer", "check", "load", "unused_port"]

#: The default of :attr:`Exchange.json`: the request body is not checked.
UNCHECKED: Any = object()


@dataclass(frozen=True)
class Exchange:
    """One expected request and the reply to it.

    ``query`` (the query string as a dict; a repeated parameter as a list) is not checked when
    ``None``, nor ``json`` (the body decoded as JSON) when :data:`UNCHECKED`; ``headers`` (lower-case
    names) must each be present with exactly that value, others may be sent too. The reply is
    ``status``, ``response_headers`` and ``body``, sent after ``delay`` seconds.
    """

    method: str = "GET"
    path: str = "/"
    query: dict[str, Any] | None = None
    json: Any = UNCHECKED
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    response_headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    body: bytes = b""
    delay: float = 0.0

    def but(self, **changes: Any) -> Exchange:
        """A copy with ``changes`` (e.g. a different expected ``query`` or ``status``)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Received:
    """A request as the server got it (header names lower-case, the query as :func:`parse_qs` gives it)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


def load(path: Path, **substitutions: str) -> Exchange:
    """Read a recording; ``{name}`` in expected header values is replaced from ``substitutions``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    request, response = data["request"], data["response"]
    if "json" in response:
        body = json.dumps(response["json"], ensure_ascii=False).encode()
    else:
        body = str(response.get("text", "")).encode()
    return Exchange(
        method=request.get("method", "GET"),
        path=request["path"],
        query=request.get("query"),
        json=request.get("json", UNCHECKED),
        headers={k.lower(): v.format(**substitutions) for k, v in request.get("headers", {}).items()},
        status=response.get("status", 200),
        response_headers={
            k.lower(): v for k, v in response.get("headers", {"content-type": "application/json"}).items()
        },
        body=body,
    )


def check(want: Exchange, got: Received) -> list[str]:
    """Differences between the expected and the received request (empty when they match)."""
    problems: list[str] = []
    if got.method != want.method or got.path != want.path:
        problems.append(f"expected {want.method} {want.path}, got {got.method} {got.path}")
    if want.query is not None:
        flat = {k: v[0] if len(v) == 1 else v for k, v in got.query.items()}
        if flat != want.query:
            problems.append(f"query: expected {want.query!r}, got {flat!r}")
    if want.json is not UNCHECKED:
        try:
            body = json.loads(got.body)
        except ValueError:
            body = got.body
        if body != want.json:
            problems.append(f"json body: expected {want.json!r}, got {body!r}")
    for name, value in want.headers.items():
        if got.headers.get(name) != value:
            problems.append(f"header {name}: expected {value!r}, got {got.headers.get(name)!r}")
    return problems


def unused_port() -> int:
    """A loopback port nobody listens on (just released), for testing refused connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ReplayServer:
    """Answers requests with the queued exchanges, in order, on ``127.0.0.1`` at a free port.

    Use it as ``async with ReplayServer() as server:`` (started on entry; on a clean exit closed
    and :meth:`verify`-ed), or call :meth:`start`, :meth:`close` and :meth:`verify` yourself.
    """

    def __init__(self) -> None:
        #: Exchanges not yet requested, in the order they will be answered.
        self.script: deque[Exchange] = deque()
        #: Every request received, matching or not.
        self.received: list[Received] = []
        #: What was wrong with the requests answered ``418``.
        self.mismatches: list[str] = []
        #: ``http://127.0.0.1:<port>`` once started (no trailing slash).
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> ReplayServer:
        """Listen on a free loopback port and set :attr:`url`."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def expect(self, *exchanges: Exchange) -> None:
        """Queue ``exchanges``, answered in order after those already queued."""
        self.script.extend(exchanges)

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def verify(self) -> None:
        """Raise :class:`AssertionError` if a request mismatched or a queued exchange was never requested."""
        if self.mismatches:
            raise AssertionError("requests did not match their exchanges:\n" + "\n".join(self.mismatches))
        if self.script:
            pending = ", ".join(f"{e.method} {e.path}" for e in self.script)
            raise AssertionError(f"a queued exchange was never requested: {pending}")

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
        if exc is None:  # an error already on its way out is the one to report
            self.verify()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                received = Received(
                    method=method,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers=headers,
                    body=body,
                    peer=writer.get_extra_info("peername")[:2],
                )
                self.received.append(received)
                status, reply_headers, reply, delay = self._reply(received)
                if delay:
                    await asyncio.sleep(delay)
                phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Custom"
                out = [f"HTTP/1.1 {status} {phrase}", f"content-length: {len(reply)}"]
                out += [f"{k}: {v}" for k, v in reply_headers.items() if k != "content-length"]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()
            self._tasks.discard(task)

    def _reply(self, got: Received) -> tuple[int, dict[str, str], bytes, float]:
        if not self.script:
            self.mismatches.append(f"unexpected request {got.method} {got.path}")
            return 418, {"content-type": "text/plain"}, b"no exchange queued", 0.0
        want = self.script.popleft()
        problems = check(want, got)
        if problems:
            self.mismatches.extend(problems)
            return 418, {"content-type": "text/plain"}, "; ".join(problems).encode(), 0.0
        return want.status, want.response_headers, want.body, want.delay
