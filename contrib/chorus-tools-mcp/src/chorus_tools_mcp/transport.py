"""MCP client transports for a configured server: a spawned stdio process or a streamable HTTP
endpoint reached through the skillset's egress guard.

Both yield the SDK's ``(read_stream, write_stream)`` pair with the read stream wrapped so that the
end of the server's messages (the process exited, the transport failed) calls ``on_lost``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx
import httpx2
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from chorus_tools_mcp.redact import Redactor, display_url

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp.shared._stream_protocols import ReadStream

    from chorus.egress import EgressPolicy
    from chorus_tools_mcp.settings import McpSettings

log = logging.getLogger("chorus.tools.mcp")

# Timeouts of the SDK's own HTTP client: a server may hold a response (SSE) stream open.
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
# Request headers the guarded client computes itself.
_COMPUTED = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"}
_STDERR_LINE_LIMIT = 2000


@asynccontextmanager
async def open_transport(
    settings: McpSettings, egress: EgressPolicy, redactor: Redactor, on_lost: Callable[[], None]
) -> AsyncIterator[TransportStreams]:
    """The transport ``settings`` describes; ``on_lost`` runs when the server's message stream ends."""
    opened = _stdio(settings, redactor) if settings.command is not None else _http(settings, egress)
    async with opened as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_lost), write_stream


@asynccontextmanager
async def _stdio(settings: McpSettings, redactor: Redactor) -> AsyncIterator[TransportStreams]:
    """Spawn the server (in its own process group, killed with its children on exit).

    The server inherits only the SDK's minimal environment (``PATH``, ``HOME``, ...) plus
    ``settings.env``; its stderr is logged line by line (secrets masked).
    """
    assert settings.command is not None
    params = StdioServerParameters(
        command=settings.command[0],
        args=settings.command[1:],
        env={key: value.get() for key, value in settings.env.items()},
        cwd=settings.cwd,
    )
    read_fd, write_fd = os.pipe()
    _StderrPump(read_fd, settings.name, redactor).start()
    errlog = os.fdopen(write_fd, "w")
    try:
        async with stdio_client(params, errlog=errlog) as streams:
            errlog.close()  # the child holds its own copy now; EOF follows its exit
            yield streams
    finally:
        errlog.close()


@asynccontextmanager
async def _http(settings: McpSettings, egress: EgressPolicy) -> AsyncIterator[TransportStreams]:
    """Open a streamable HTTP session whose every request goes through ``egress.client()``."""
    assert settings.url is not None
    guarded = egress.client()
    bridge = EgressBridge(guarded, settings.name)
    headers = {key: value.get() for key, value in settings.headers.items()}
    async with (
        guarded,
        httpx2.AsyncClient(transport=bridge, headers=headers, timeout=HTTP_TIMEOUT) as client,
        streamable_http_client(settings.url, http_client=client) as streams,
    ):
        yield streams


class EgressBridge(httpx2.AsyncBaseTransport):
    """An httpx2 transport (what the MCP SDK speaks) that sends through an httpx client.

    The httpx client is the skillset's egress-guarded one, so every request, redirect hop and
    connection of the MCP session is checked like any other tool traffic. Redirects are returned,
    not followed: the SDK follows only those that stay on the endpoint's origin.
    """

    def __init__(self, client: httpx.AsyncClient, entry: str) -> None:
        self._client = client
        self._entry = entry

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in _COMPUTED]
        timeout = request.extensions.get("timeout")
        outgoing = self._client.build_request(
            request.method,
            str(request.url),
            headers=headers,
            content=body,
            timeout=httpx.Timeout(**timeout) if timeout else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            response = await self._client.send(outgoing, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            # Same class name in httpx2 (ConnectError, ReadTimeout, ...) so the SDK handles it alike.
            kind = getattr(httpx2, type(exc).__name__, httpx2.TransportError)
            if not (isinstance(kind, type) and issubclass(kind, httpx2.TransportError)):
                kind = httpx2.TransportError
            raise kind(str(exc), request=request) from exc
        if response.status_code >= 400:
            log.warning(
                "mcp %s: HTTP %d from %s %s",
                self._entry,
                response.status_code,
                request.method,
                display_url(str(request.url)),
            )
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=_ResponseBody(response),
            request=request,
            extensions={"http_version": response.extensions.get("http_version", b"HTTP/1.1")},
        )


class _ResponseBody(httpx2.AsyncByteStream):
    """The raw (still encoded) body of an httpx response, for an httpx2 response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise httpx2.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class _WatchedReadStream:
    """A transport read stream that calls ``on_lost`` when it ends or is closed under its reader."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost = on_lost

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_lost()
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def last_context(self) -> Any:
        """The sender's context of the last item, when the inner stream records it (SDK contract)."""
        return getattr(self._inner, "last_context", None)


class _StderrPump(threading.Thread):
    """Logs a stdio server's stderr, one record per line, until every writer has closed it."""

    def __init__(self, fd: int, entry: str, redactor: Redactor) -> None:
        super().__init__(name=f"mcp-stderr-{entry}", daemon=True)
        self._fd = fd
        self._entry = entry
        self._redactor = redactor

    def run(self) -> None:
        with open(self._fd, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                line = line.rstrip()
                if line:
                    log.info("mcp %s stderr: %s", self._entry, self._redactor.text(line[:_STDERR_LINE_LIMIT]))
