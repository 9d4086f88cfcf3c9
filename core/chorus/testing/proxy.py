"""A small, honest HTTP forward proxy on loopback, to prove that upstream traffic goes through a proxy.

:class:`ForwardProxy` listens on ``127.0.0.1:<free port>`` in a background thread and serves both
ways a client uses a proxy:

* ``CONNECT host:port``: it opens a TCP connection to the origin, answers ``200``, and relays bytes
  both ways (TLS stays end to end: the proxy sees only the host and port);
* an absolute-form request (``POST http://host:port/path HTTP/1.1``): it forwards the request to the
  origin in origin form, with ``Connection: close`` and without the ``Proxy-*`` headers, and relays
  the answer until the origin closes (one request per client connection).

Every request head it receives is recorded in :attr:`ForwardProxy.requests` (method, target, headers
with lower-case names). With ``credentials=("user", "password")`` it answers ``407`` (and closes)
to any request without the matching ``Proxy-Authorization: Basic`` header::

    with ForwardProxy() as proxy:
        ...  # point a client at proxy.url
        assert proxy.requests[0].method == "CONNECT"

This module depends on the standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ForwardProxy", "ProxyRecord"]


@dataclass(frozen=True)
class ProxyRecord:
    """One request head the proxy received."""

    method: str
    target: str
    headers: dict[str, str]


class ForwardProxy:
    """An HTTP/1.1 forward proxy with ``CONNECT`` (see the module docstring)."""

    def __init__(self, *, credentials: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[ProxyRecord] = []
        self._expected = None
        if credentials is not None:
            self._expected = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no credentials)."""
        return f"http://{self.host}:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy URL carrying credentials: ``http://user:password@127.0.0.1:<port>``."""
        return f"http://{user}:{password}@{self.host}:{self.port}"

    def start(self) -> ForwardProxy:
        self._thread = threading.Thread(target=self._run, name="forward-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._failure is not None:
            raise RuntimeError(f"ForwardProxy failed to start: {self._failure!r}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def seen(self, method: str | None = None) -> list[ProxyRecord]:
        """The recorded request heads (only those with ``method``, when given)."""
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    # -- the server thread ------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            with self._lock:
                self.requests.append(ProxyRecord(method, target, headers))
            if self._expected is not None and headers.get("proxy-authorization") != self._expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\n"
                             b"content-length: 0\r\nconnection: close\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        try:
            origin_reader, origin_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _relay_both(reader, writer, origin_reader, origin_writer)

    async def _forward(self, method: str, target: str, headers: dict[str, str], reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return
        body = await reader.readexactly(int(headers.get("content-length") or 0))
        try:
            origin_reader, origin_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [f"{name}: {value}\r\n" for name, value in headers.items()
                if name not in ("connection", "proxy-connection", "proxy-authorization", "keep-alive")]
        origin_writer.write(f"{method} {path} HTTP/1.1\r\n{''.join(kept)}connection: close\r\n\r\n".encode("latin-1") + body)
        await origin_writer.drain()
        try:
            while data := await origin_reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            origin_writer.close()


async def _relay_both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      origin_reader: asyncio.StreamReader, origin_writer: asyncio.StreamWriter) -> None:
    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass

    tasks = [asyncio.ensure_future(copy(reader, origin_writer)), asyncio.ensure_future(copy(origin_reader, writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        origin_writer.close()
