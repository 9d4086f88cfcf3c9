"""A loopback HTTP/1.1 server that checks each incoming request and replays a recorded response.

A recording (``recordings/<name>.json``) holds one exchange::

    {"request": {"method": "POST", "path": "/search",
                 "query": {...},                              # exact query string (optional)
                 "json": {"query": "...", "max_results": 5},  # exact JSON body (optional)
                 "headers": {"authorization": "Bearer {api_key}"}},  # must be present (optional)
     "response": {"status": 200, "headers": {...}, "json": {...}}}   # or "text": "..."

``{api_key}`` in expected headers is replaced by the test's key. A request that does not match
its exchange is answered ``418`` and recorded in :attr:`ReplayServer.mismatches`. The server
runs in the test's own event loop and keeps connections alive, so tests can also check pooling.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

UNCHECKED: Any = object()


@dataclass(frozen=True)
class Exchange:
    """One expected request (``None``/``UNCHECKED`` parts are not checked) and the reply to it."""

    method: str = "GET"
    path: str = "/"
    query: dict[str, str] | None = None
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
    """What the server got."""

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


class ReplayServer:
    """Answers requests with the queued exchanges, in order."""

    def __init__(self) -> None:
        self.script: deque[Exchange] = deque()
        self.received: list[Received] = []
        self.mismatches: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = ""

    async def start(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def expect(self, *exchanges: Exchange) -> None:
        self.script.extend(exchanges)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

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


def check(want: Exchange, got: Received) -> list[str]:
    """Differences between the expected and the received request."""
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
