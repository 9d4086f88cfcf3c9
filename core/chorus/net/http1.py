"""A lean pooled HTTP/1.1 client for the upstream hop of provider drivers.

Every chat request crosses this hop once, so its cost is a floor under the gateway's own. Measured
in ``benchmarks/client_compare.py`` (``docs/benchmarks.md``): httpx's pool collapses under
concurrency and aiohttp spends 60-125 µs of CPU per request; this client, built on an
:class:`asyncio.Protocol` and httptools (the C parser uvicorn uses), does the same work in a
fraction of that.

Scope, by design: HTTP/1.1 over TCP or TLS to one origin per :class:`HTTPPool`; keep-alive
connections reused last-in first-out, at most ``max_connections`` at once (callers beyond that
wait for a free one); request bodies as bytes written with the head in one ``write``; responses
read whole (:meth:`Response.read`) or streamed (:meth:`Response.aiter_bytes`, with flow control);
``content-length``, chunked and read-until-close framing; ``gzip``/``deflate`` response bodies
decoded; one deadline per request covering the wait for a connection, connecting, sending, and
reading the whole response. A reused keep-alive connection that turns out to be closed before
any byte of the answer arrives is retried on another connection (the server never saw the
request), as urllib3 does. An HTTP proxy (``proxy=``, a :class:`~chorus.net.proxy.Proxy`) is used
as curl uses one: ``https://`` origins through a ``CONNECT`` tunnel (TLS end to end, the proxy
sees only the host and port), ``http://`` origins with absolute-form request targets; without a
proxy nothing on the request path changes. Not supported: redirects, cookies, HTTP/2, ``HEAD``.

Failures are :class:`HTTPError` subclasses: :class:`ConnectError`, :class:`RequestTimeout`
(also a :class:`TimeoutError`), :class:`RemoteProtocolError` (:class:`ConnectionLost` when the
server closed the connection mid-exchange), :class:`ResponseTooLarge` (a body over the ``limit``
given to :meth:`Response.read`) and :class:`PoolClosed`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

from chorus.net.proxy import Proxy

__all__ = [
    "ConnectError",
    "ConnectionLost",
    "HTTPError",
    "HTTPPool",
    "PoolClosed",
    "RemoteProtocolError",
    "RequestTimeout",
    "Response",
    "ResponseTooLarge",
]

_PAUSE_ABOVE = 256 * 1024  # buffered bytes of a streamed body before reading pauses
_DRAIN_SECONDS = 5.0  # how long a released response may take to finish in the background
_MAX_RETRIES = 2  # stale keep-alive connections skipped per request
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_MAX_TUNNEL_HEAD = 64 * 1024  # largest answer head a proxy may send to CONNECT


class HTTPError(Exception):
    """The upstream exchange failed (no HTTP status to report)."""


class ConnectError(HTTPError):
    """The connection could not be opened (refused, unresolvable, TLS handshake failed)."""


class RequestTimeout(HTTPError, TimeoutError):
    """The request's deadline passed (waiting for a connection, connecting or reading)."""


class RemoteProtocolError(HTTPError):
    """The server broke HTTP: malformed response, or closed the connection mid-response."""


class ConnectionLost(RemoteProtocolError):
    """The server closed the connection (or it broke) before the response was complete."""


class ResponseTooLarge(HTTPError):
    """The response body is larger than the caller's limit (the connection is closed)."""


class PoolClosed(HTTPError):
    """The pool was closed."""


def _check_header(name: str, value: str) -> None:
    """Refuse header injection, and the framing headers the client writes itself."""
    if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid HTTP header {name!r}")
    if name.lower() in _FRAMING:
        raise ValueError(f"header {name!r} is set by the client itself")


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the state of the response being read on it."""

    def __init__(self, pool: HTTPPool) -> None:
        self.pool = pool
        self.loop = pool._loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # holds one of the pool's ``max_connections`` slots
        self.in_pool = False
        self.draining: asyncio.TimerHandle | None = None
        self.reused = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.error: BaseException | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.complete = False
        self.until_close = False
        self.keep_alive = True
        self.interim = False
        self.decoder: zlib._Decompress | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = False
        self.streaming = False
        self.limit: int | None = None  # most body bytes wanted (Response.read), None: no cap

    # -- request side ---------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Start a new exchange on this connection."""
        self._reset()
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionLost("the connection was closed by the server")
        try:
            self.transport.write(payload)
        except (OSError, RuntimeError) as exc:  # the socket died between the check and the write
            raise ConnectionLost(f"the connection broke while sending ({exc})") from None

    async def wait(self) -> None:
        """Wait until the response makes progress; raise the connection's error if it failed."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def expire(self) -> None:
        """The request's deadline passed: fail the exchange and drop the connection."""
        self.fail(RequestTimeout("the upstream did not answer in time"))

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def take(self) -> bytes:
        """Hand out everything buffered so far (resuming reads paused for flow control)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection: the loop gives a Transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.complete:  # nothing was asked (the connection is idle, or the answer was complete)
            self.fail(RemoteProtocolError("the server sent data nobody asked for"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(RemoteProtocolError(f"malformed HTTP response ({exc})"))
            return
        if self.streaming and not self.paused and self.buffered > _PAUSE_ABOVE and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self.until_close and self.error is None:
            self._finish_body()
        elif not self.complete and self.error is None:
            what = "before answering" if not self.headers_done else "in the middle of the response"
            self.error = ConnectionLost(f"the server closed the connection {what}")
        self._wake()
        self.pool._lost(self)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.interim = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        framed = False
        for name, value in self.headers:
            if name == "content-length" or (name == "transfer-encoding" and "chunked" in value.lower()):
                framed = True
            elif name == "content-encoding":
                coding = value.strip().lower()
                if coding in ("gzip", "x-gzip", "deflate"):
                    self.decoder = zlib.decompressobj(47)  # zlib or gzip header, detected
                elif coding not in ("", "identity"):
                    self.fail(RemoteProtocolError(f"unsupported content-encoding {coding!r}"))
                    return
        self.until_close = not framed and status not in (204, 304)
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.interim:
            return
        if self.draining is not None:
            return  # released early: the rest of the body is not wanted
        limit = self.limit
        if self.decoder is not None:
            try:  # with a limit, never inflate more than it allows (a compressed bomb stays small)
                if limit is None:
                    body = self.decoder.decompress(body)
                else:
                    body = self.decoder.decompress(body, limit - self.buffered + 1)
            except zlib.error:
                self.fail(RemoteProtocolError("the response body could not be decompressed"))
                return
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if limit is not None and self.buffered > limit:
            self.fail(ResponseTooLarge(f"the response body is larger than {limit} bytes"))
            return
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self._finish_body()

    def _finish_body(self) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self.chunks.append(tail)
            if not self.decoder.eof:
                self.fail(RemoteProtocolError("the compressed response body was cut short"))
                return
        self.complete = True
        self._wake()
        if self.draining is not None:
            self.draining.cancel()
            self.draining = None
            self.pool._put(self)


class Response:
    """An upstream response: status and headers are in; read the body once, then it is released.

    ``headers`` has lower-case names; repeated headers are joined with ``", "``. Reading the body to
    the end returns the connection to the pool; :meth:`close` (or leaving a stream early) closes it
    instead, so the upstream sees the cancellation.
    """

    __slots__ = ("_conn", "_pool", "_timer", "headers", "status")

    def __init__(self, pool: HTTPPool, conn: _Connection, timer: asyncio.TimerHandle) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timer = timer
        self.status = conn.status
        headers: dict[str, str] = {}
        for name, value in conn.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers

    async def read(self, limit: int | None = None) -> bytes:
        """The whole (decoded) body; past ``limit`` bytes, :class:`ResponseTooLarge` (read no further)."""
        conn = self._connection()
        try:
            if limit is not None:
                announced = self.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > limit and conn.decoder is None:
                    raise ResponseTooLarge(f"the response body is larger than {limit} bytes ({announced} announced)")
                conn.limit = limit
                if conn.buffered > limit:
                    raise ResponseTooLarge(f"the response body is larger than {limit} bytes")
            while not conn.complete:
                await conn.wait()
        except BaseException:
            self.close()
            raise
        body = conn.take()
        self.release()
        return body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each item is everything received since the previous one."""
        conn = self._connection()
        conn.streaming = True
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                elif conn.complete:
                    break
                else:
                    await conn.wait()
        except BaseException:
            self.close()
            raise
        self.release()

    def release(self) -> None:
        """Return the connection to the pool once the body has ended (a stream still framing its end
        finishes in the background), else close it."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._timer.cancel()
        if conn.error is not None or not conn.keep_alive:
            self._pool._drop(conn)
        elif conn.complete:
            conn.take()
            self._pool._put(conn)
        elif conn.streaming and not conn.closed:
            # The caller has what it needs (a stream's last event) but the framing has not ended
            # yet (typically the chunked terminator in the next packet): finish in the background.
            conn.take()
            conn.draining = conn.loop.call_later(_DRAIN_SECONDS, self._pool._drop, conn)
        else:
            self._pool._drop(conn)

    def close(self) -> None:
        """Close the connection (the rest of the body is not wanted)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._timer.cancel()
        self._pool._drop(conn)

    def _connection(self) -> _Connection:
        if self._conn is None:
            raise RuntimeError("the response body was already consumed or closed")
        return self._conn


class HTTPPool:
    """Keep-alive connections to the origin of ``base_url``; request paths are relative to its path.

    Create it inside the running event loop that will use it (e.g. in a driver's ``start``) and
    :meth:`aclose` it there. ``headers`` are sent with every request; ``timeout`` is the default
    deadline of a whole request, ``connect_timeout`` bounds opening a connection, idle connections
    older than ``keepalive_expiry`` seconds are not reused. ``proxy``: go through this HTTP proxy
    (see the module docstring); its credentials never appear in errors.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 512,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 15.0,
        ssl_context: _ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._loop = asyncio.get_running_loop()
        self.host = url.hostname
        self.tls = url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)
        self.base_path = url.path.rstrip("/")
        self.max_connections = max_connections
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self._ssl = (ssl_context or _ssl.create_default_context()) if self.tls else None
        default_port = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default_port else f"{host}:{self.port}"
        merged = {"host": authority, "user-agent": "chorus", "accept-encoding": "gzip, deflate"}
        for name, value in (headers or {}).items():
            _check_header(name, value)
            merged[name.lower()] = value
        self.proxy = proxy
        # a plain-http origin through a proxy: absolute-form targets, credentials on every request
        self._target_prefix = ""
        if proxy is not None and not self.tls:
            self._target_prefix = f"http://{authority}"
            if proxy.authorization:
                merged["proxy-authorization"] = proxy.authorization
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in merged.items())
        self._idle: deque[_Connection] = deque()
        self._slot_waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._active = 0
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and return once the response's status and headers are in."""
        if method.upper() == "HEAD":
            raise ValueError("HEAD is not supported")
        extra = ""
        if headers:
            for name, value in headers.items():
                _check_header(name, value)
            extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        target = self.base_path + path
        if not target.startswith("/") or any(c in target for c in " \r\n"):
            raise ValueError(f"invalid request path {target!r}")
        payload = (
            f"{method} {self._target_prefix}{target} HTTP/1.1\r\n{self._headers}{extra}"
            f"content-length: {len(body)}\r\n\r\n".encode("latin-1")
            + body
        )
        loop = self._loop
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        retries = 0
        while True:
            conn = await self._acquire(deadline)
            timer = loop.call_at(deadline, conn.expire)
            try:
                conn.send(payload)
                while not conn.headers_done:
                    await conn.wait()
            except RemoteProtocolError:
                timer.cancel()
                self._drop(conn)
                if conn.reused and not conn.received and retries < _MAX_RETRIES:
                    retries += 1
                    continue
                raise
            except BaseException:
                timer.cancel()
                self._drop(conn)
                raise
            return Response(self, conn, timer)

    async def aclose(self) -> None:
        """Close every connection; requests still waiting for one fail with :class:`PoolClosed`."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool was closed"))

    # -- connections ----------------------------------------------------------------------------

    async def _acquire(self, deadline: float) -> _Connection:
        if self._closed:
            raise PoolClosed("the connection pool was closed")
        idle = self._idle
        if idle:
            now = self._loop.time()
            while idle:
                conn = idle.pop()
                conn.in_pool = False
                if conn.closed:
                    self._forget(conn)
                elif now - conn.idle_since > self.keepalive_expiry:
                    conn.close()
                    self._forget(conn)
                else:
                    conn.reused = True
                    return conn
        if self._active < self.max_connections:
            self._active += 1
            return await self._connect(deadline)
        waiter: asyncio.Future[_Connection | None] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        timer = self._loop.call_at(deadline, _expire_waiter, waiter)
        try:
            conn_or_slot = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as the caller gave up: pass it on
                if handed is None:
                    self._active -= 1
                    self._hand_slot()
                else:
                    self._put(handed)
            raise
        finally:
            timer.cancel()
        if conn_or_slot is not None:
            conn_or_slot.reused = True
            return conn_or_slot
        return await self._connect(deadline)  # a slot freed up: the count is already ours

    async def _connect(self, deadline: float) -> _Connection:
        """Open a connection; the caller has already counted it in ``_active``."""
        loop = self._loop
        proxy = self.proxy
        where = f"{self.host}:{self.port}" if proxy is None else f"{self.host}:{self.port} through proxy {proxy.address}"
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout("the upstream did not answer in time")
            try:
                async with asyncio.timeout(min(self.connect_timeout, remaining)):
                    if proxy is None:
                        _, conn = await loop.create_connection(
                            lambda: _Connection(self),
                            self.host,
                            self.port,
                            ssl=self._ssl,
                            server_hostname=self.host if self._ssl is not None else None,
                        )
                    elif self._ssl is None:  # plain http: talk HTTP to the proxy itself
                        _, conn = await loop.create_connection(lambda: _Connection(self), proxy.host, proxy.port)
                    else:  # https: a CONNECT tunnel, then TLS with the origin inside it
                        sock = await self._tunnel(proxy)
                        try:
                            _, conn = await loop.create_connection(
                                lambda: _Connection(self), sock=sock, ssl=self._ssl, server_hostname=self.host
                            )
                        except BaseException:
                            sock.close()
                            raise
            except TimeoutError:
                raise RequestTimeout(f"connecting to {where} timed out") from None
            except _ssl.SSLError as exc:
                raise ConnectError(f"TLS handshake with {where} failed ({exc.reason})") from None
            except OSError as exc:
                raise ConnectError(f"cannot connect to {where} ({exc.strerror or exc})") from None
        except BaseException:
            self._active -= 1
            self._hand_slot()
            raise
        return conn

    async def _tunnel(self, proxy: Proxy) -> socket.socket:
        """A socket connected to the proxy with a ``CONNECT`` tunnel to the origin established."""
        loop = self._loop
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        sock: socket.socket | None = None
        failure: OSError | None = None
        for family, kind, proto, _, address in infos:
            candidate = socket.socket(family, kind, proto)
            candidate.setblocking(False)
            try:
                await loop.sock_connect(candidate, address)
            except OSError as exc:
                candidate.close()
                failure = exc
                continue
            except BaseException:
                candidate.close()
                raise
            sock = candidate
            break
        if sock is None:
            raise failure or OSError("no address")
        try:
            host = f"[{self.host}]" if ":" in self.host else self.host
            authority = f"{host}:{self.port}"
            head = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
            if proxy.authorization:
                head += f"proxy-authorization: {proxy.authorization}\r\n"
            await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectError(f"proxy {proxy.address} closed the connection instead of opening a tunnel")
                answer += data
                if len(answer) > _MAX_TUNNEL_HEAD:
                    raise ConnectError(f"proxy {proxy.address} sent an oversized answer to CONNECT")
            status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
                shown = status_line[:100].replace("\r", " ")
                raise ConnectError(f"proxy {proxy.address} refused the tunnel to {authority} ({shown})")
            if not answer.endswith(b"\r\n\r\n"):
                raise ConnectError(f"proxy {proxy.address} sent data after opening the tunnel")
        except BaseException:
            sock.close()
            raise
        return sock

    def _put(self, conn: _Connection) -> None:
        """A connection is free again: hand it to a waiting request, or keep it idle."""
        if self._closed or conn.closed:
            self._drop(conn)
            return
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self._loop.time()
        conn.in_pool = True
        self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        if conn.draining is not None:
            conn.draining.cancel()
            conn.draining = None
        conn.close()
        self._forget(conn)

    def _lost(self, conn: _Connection) -> None:
        """The transport closed (either side). Idle connections leave the pool at once."""
        if conn.draining is not None:
            self._drop(conn)
        elif conn.in_pool:
            conn.in_pool = False
            try:
                self._idle.remove(conn)
            except ValueError:
                pass
            self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        if conn.counted:
            conn.counted = False
            self._active -= 1
            self._hand_slot()

    def _hand_slot(self) -> None:
        """Let one waiting request open a connection in a freed slot."""
        while self._slot_waiters and not self._closed:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                self._active += 1
                waiter.set_result(None)
                return


def _expire_waiter(waiter: asyncio.Future[_Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeout("no upstream connection became free in time"))
