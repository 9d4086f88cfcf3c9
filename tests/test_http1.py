"""chorus.http1: the pooled HTTP/1.1 client of the upstream hop, against real loopback servers.

Each test scripts a small asyncio server byte by byte (framing, closes, stalls) and checks what the
client returns and what the server saw (connections opened, requests, disconnects).
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chorus.net.http1 import (
    ConnectError,
    ConnectionLost,
    HTTPPool,
    PoolClosed,
    RemoteProtocolError,
    RequestTimeout,
    ResponseTooLarge,
)
from chorus.net.sse import EventTooLarge, iter_sse_data

Handler = Callable[[bytes, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]

JSON_OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


class Server:
    """A loopback HTTP/1.1 server whose answer to each request is a scripted coroutine.

    The handler gets the request head and body and writes the raw answer; returning ``False`` closes
    the connection. Counts connections (total, open, most open at once) and disconnects.
    """

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl_context
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.closed = asyncio.Event()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def url(self, scheme: str = "http") -> str:
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                if await self.handler(head, body, reader, writer) is False:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            self.closed.set()
            writer.close()


async def answer_json(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(JSON_OK)


async def test_json_answer_and_keep_alive_reuse() -> None:
    async with Server(answer_json) as server:
        pool = HTTPPool(server.url(), headers={"authorization": "Bearer sk-test", "X-Extra": "1"})
        for _ in range(3):
            response = await pool.request("POST", "/chat/completions", b'{"a":1}')
            assert (response.status, response.headers["content-type"]) == (200, "application/json")
            assert await response.read() == b'{"ok":true}'
        await pool.aclose()
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    lines = head.lower().split(b"\r\n")
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"authorization: bearer sk-test" in lines and b"x-extra: 1" in lines
    assert b"content-length: 7" in lines and body == b'{"a":1}'


async def test_chunked_stream_arrives_as_it_is_sent() -> None:
    gate = asyncio.Event()

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"7\r\ndata: 1\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/chat/completions", b"{}")
        received = []
        async for data in response.aiter_bytes():
            received.append(data)
            if len(received) == 1:
                assert data == b"data: 1" and not gate.is_set()
                gate.set()
        assert b"".join(received) == b"data: 1data: 2"
        response = await pool.request("POST", "/chat/completions", b"{}")  # back in the pool, reused
        await response.read()
        await pool.aclose()
    assert server.connections == 1


async def test_read_until_close_and_connection_close_are_not_reused() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) % 2:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbye!")
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        assert await (await pool.request("GET", "/models")).read() == b"until the end"
        assert await (await pool.request("GET", "/models")).read() == b"bye!"
        assert await (await pool.request("GET", "/models")).read() == b"until the end"
        await pool.aclose()
    assert server.connections == 3


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_bodies_are_decoded(coding: str) -> None:
    payload = b'{"text": "' + b"compressible " * 500 + b'"}'
    packed = gzip.compress(payload) if coding == "gzip" else zlib.compress(payload)

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ncontent-length: %d\r\n\r\n%s"
                     % (coding.encode(), len(packed), packed))

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        assert await (await pool.request("POST", "/x", b"{}")).read() == payload
        await pool.aclose()
    assert b"accept-encoding: gzip, deflate" in server.requests[0][0]


@pytest.mark.parametrize(("answer", "message"), [
    (b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 3\r\n\r\nabc", "content-encoding"),
    (b"SMTP ready\r\n\r\n", "malformed"),
], ids=["unknown content-encoding", "not HTTP"])
async def test_an_unusable_answer_is_a_protocol_error(answer: bytes, message: str) -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        with pytest.raises(RemoteProtocolError, match=message):
            await pool.request("POST", "/x", b"{}")
        await pool.aclose()


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + JSON_OK)

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        assert response.status == 200 and await response.read() == b'{"ok":true}'
        await pool.aclose()


async def test_error_statuses_are_returned_not_raised() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 2\r\n\r\n{}")

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        assert (response.status, response.headers["retry-after"], response.headers["x-a"]) == (429, "3", "1, 2")
        assert await response.read() == b"{}"
        await pool.aclose()


async def test_a_stale_keep_alive_connection_is_retried_on_a_new_one() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(JSON_OK)
        await writer.drain()
        return False  # keep-alive advertised, then closed: the next request finds a dead connection

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        for _ in range(3):
            assert await (await pool.request("POST", "/x", b"{}")).read() == b'{"ok":true}'
        await pool.aclose()
    assert server.connections == 3 and len(server.requests) == 3


async def test_a_fresh_connection_closed_before_answering_is_not_retried() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        with pytest.raises(RemoteProtocolError, match="before answering"):
            await pool.request("POST", "/x", b"{}")
        await pool.aclose()
    assert len(server.requests) == 1


async def test_closed_in_the_middle_of_the_body() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        with pytest.raises(ConnectionLost, match="middle of the response"):
            await response.read()
        await pool.aclose()


async def test_timeout_closes_the_connection() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()  # never answers; returns when the client hangs up
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url(), timeout=30)
        with pytest.raises(RequestTimeout):
            await pool.request("POST", "/x", b"{}", timeout=0.2)
        await asyncio.wait_for(server.closed.wait(), 30)
        await pool.aclose()


async def test_deadline_covers_reading_the_body() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}", timeout=0.3)
        with pytest.raises(TimeoutError):
            await response.read()
        await asyncio.wait_for(server.closed.wait(), 30)
        await pool.aclose()


async def test_cancelling_a_request_closes_its_connection_and_frees_the_slot() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool | None:
        if server.connections == 1:
            await reader.read()
            return False
        writer.write(JSON_OK)
        return None

    async with Server(handler) as server:
        pool = HTTPPool(server.url(), max_connections=1)
        task = asyncio.create_task(pool.request("POST", "/x", b"{}"))
        while not server.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 30)
        assert await (await pool.request("POST", "/x", b"{}")).read() == b'{"ok":true}'
        await pool.aclose()


async def test_max_connections_bounds_concurrency_and_waiters_get_connections() -> None:
    release = asyncio.Event()

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.write(JSON_OK)

    async with Server(handler) as server:
        pool = HTTPPool(server.url(), max_connections=2)

        async def call() -> bytes:
            return await (await pool.request("POST", "/x", b"{}")).read()

        tasks = [asyncio.create_task(call()) for _ in range(6)]
        while len(server.requests) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(server.requests) == 2  # the other four wait for a connection
        release.set()
        assert await asyncio.gather(*tasks) == [b'{"ok":true}'] * 6
        await pool.aclose()
    assert server.max_open == 2 and server.connections == 2


async def test_waiting_for_a_connection_counts_against_the_deadline() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url(), max_connections=1)
        first = asyncio.create_task(pool.request("POST", "/x", b"{}", timeout=30))
        while not server.requests:
            await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeout, match="no upstream connection"):
            await pool.request("POST", "/x", b"{}", timeout=0.2)
        first.cancel()
        await pool.aclose()


async def test_a_stream_released_before_its_terminator_returns_to_the_pool() -> None:
    gate = asyncio.Event()

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await gate.wait()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(JSON_OK)

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        async for data in response.aiter_bytes():
            assert data == b"data: [DONE]\n\n"
            break
        response.release()  # the caller has its last event; the terminator is still on the way
        gate.set()

        async def back_in_pool() -> None:
            while not pool._idle:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(back_in_pool(), 5)
        assert await (await pool.request("POST", "/x", b"{}")).read() == b'{"ok":true}'
        await pool.aclose()
    assert server.connections == 1


async def test_closing_a_stream_early_hangs_up() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        stream = response.aiter_bytes()
        assert await stream.__anext__() == b"hello"
        await stream.aclose()
        await asyncio.wait_for(server.closed.wait(), 30)
        await pool.aclose()


async def test_large_stream_read_slowly_arrives_whole() -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    blocks = 64  # 4 MiB in all: reading pauses and resumes many times

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            writer.write(block)
            await writer.drain()

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        received = bytearray()
        async for data in response.aiter_bytes():
            received += data
            await asyncio.sleep(0.001)
        assert bytes(received) == block * blocks
        await pool.aclose()


async def test_idle_connections_expire() -> None:
    async with Server(answer_json) as server:
        pool = HTTPPool(server.url(), keepalive_expiry=0.0)
        for _ in range(2):
            await (await pool.request("POST", "/x", b"{}")).read()
            await asyncio.sleep(0.01)
        await pool.aclose()
    assert server.connections == 2


async def test_connection_refused() -> None:
    async with Server(answer_json) as server:
        url = server.url()
    pool = HTTPPool(url)
    with pytest.raises(ConnectError, match="cannot connect"):
        await pool.request("POST", "/x", b"{}")
    await pool.aclose()


async def test_tls_verified_and_rejected() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with Server(answer_json, ssl_context=server_ctx) as server:
        pool = HTTPPool(server.url("https"), ssl_context=trusting)
        assert await (await pool.request("POST", "/x", b"{}")).read() == b'{"ok":true}'
        await pool.aclose()
        strict = HTTPPool(server.url("https"))  # the system's trust store does not know this CA
        with pytest.raises(ConnectError, match="TLS handshake"):
            await strict.request("POST", "/x", b"{}")
        await strict.aclose()
    assert f"host: localhost:{server.port}".encode() in server.requests[0][0]


async def test_closing_the_pool_fails_waiting_requests() -> None:
    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()
        return False

    async with Server(handler) as server:
        pool = HTTPPool(server.url(), max_connections=1)
        first = asyncio.create_task(pool.request("POST", "/x", b"{}"))
        while not server.requests:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(pool.request("POST", "/x", b"{}"))
        await asyncio.sleep(0.02)
        await pool.aclose()
        with pytest.raises(PoolClosed):
            await waiting
        with pytest.raises(PoolClosed):
            await pool.request("POST", "/x", b"{}")
        first.cancel()


async def test_bad_urls_and_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPPool("ftp://example.com/v1")
    with pytest.raises(ValueError, match="invalid HTTP header"):
        HTTPPool("http://127.0.0.1:1/v1", headers={"x-a": "1\r\nx-injected: 1"})
    with pytest.raises(ValueError, match="set by the client"):
        HTTPPool("http://127.0.0.1:1/v1", headers={"Content-Length": "5"})
    pool = HTTPPool("http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="invalid request path"):
        await pool.request("POST", "/x y", b"")
    with pytest.raises(ValueError, match="HEAD"):
        await pool.request("HEAD", "/x")
    await pool.aclose()


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
async def test_a_body_over_the_read_limit_is_refused_while_reading(framing: str) -> None:
    """The limit holds whatever the framing: announced, chunked, or a small compressed body that
    inflates far beyond it (inflated no further than the limit)."""
    payload = b"x" * 5_000_000

    async def handler(head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if framing == "gzip":
            packed = gzip.compress(payload)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(packed) + packed)
        elif framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for start in range(0, len(payload), 65536):
                piece = payload[start:start + 65536]
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
        return None

    async with Server(handler) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("POST", "/x", b"{}")
        with pytest.raises(ResponseTooLarge):
            await response.read(100_000)
        small = await pool.request("POST", "/x", b"{}")  # the pool still works (a new connection)
        assert len(await small.read(len(payload))) == len(payload)
        await pool.aclose()


async def chunks_of(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_an_sse_event_over_the_limit_is_refused() -> None:
    events = [e async for e in iter_sse_data(chunks_of(b"data: small\n\n", b"data: ok\n\n"), max_event_bytes=10)]
    assert events == [b"small", b"ok"]
    with pytest.raises(EventTooLarge):  # whole in one read
        [e async for e in iter_sse_data(chunks_of(b"data: " + b"x" * 100 + b"\n\n"), max_event_bytes=10)]
    with pytest.raises(EventTooLarge):  # many lines
        [e async for e in iter_sse_data(chunks_of(*[b"data: xxxx\n"] * 5), max_event_bytes=10)]
    with pytest.raises(EventTooLarge):  # a line that never ends
        [e async for e in iter_sse_data(chunks_of(*[b"x" * 4] * 5), max_event_bytes=10)]
