#!/usr/bin/env python3
"""A fast mock OpenAI upstream for benchmarks: raw asyncio HTTP/1.1 (uvloop when installed).

No framework, no per-request JSON encoding: every response body is built once at startup.

* ``POST /v1/chat/completions`` (also ``/chat/completions``): a ``chat.completion`` JSON, or with
  ``"stream": true`` an SSE stream (chunked transfer encoding, like OpenAI): a role chunk,
  ``--chunks`` content chunks ``--chunk-interval-ms`` apart, a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``.
* ``GET /v1/models`` (also ``/models``): one model.
* ``GET /health``: ``{"status":"ok"}``.

``--latency-ms`` delays every chat response (and the first stream byte) by that much.
HTTP/1.1 keep-alive is the default; ``Connection: close`` is honoured; pipelined requests are
answered in order. Loopback only by default. Stops on SIGINT/SIGTERM.

    python benchmarks/mock_upstream.py --port 9100 --latency-ms 0 --chunks 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

MODEL = "gpt-4o-mini"
COMPLETION_ID = "chatcmpl-mock0000000000000000000000"
REPLY = "Hello! This is the mock upstream answering your request with a short, fixed reply."


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk of the chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: object) -> bytes:
    return b"data: " + _json(obj) + b"\n\n"


class Bodies:
    """Every byte the mock sends, prepared once."""

    def __init__(self, chunks: int, token: str) -> None:
        created = int(time.time())
        completion = {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 25, "completion_tokens": 18, "total_tokens": 43},
        }
        self.completion = _response("200 OK", _json(completion))
        self.completion_close = self.completion.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
        models = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": created, "owned_by": "mock"}]}
        self.models = _response("200 OK", _json(models))
        self.health = _response("200 OK", b'{"status":"ok"}')
        self.not_found = _response(
            "404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error","code":null,"param":null}}'
        )
        self.bad_request = _response(
            "400 Bad Request", b'{"error":{"message":"bad request","type":"invalid_request_error","code":null,"param":null}}'
        )

        def chunk_obj(delta: dict, finish: str | None = None, usage: object = None, choices: bool = True) -> dict:
            obj = {
                "id": COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
            }
            if usage is not None:
                obj["usage"] = usage
            return obj

        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        self.role = _chunk(_sse(chunk_obj({"role": "assistant", "content": "", "refusal": None})))
        self.content = _chunk(_sse(chunk_obj({"content": token})))
        self.finish = _chunk(_sse(chunk_obj({}, finish="stop")))
        usage = {"prompt_tokens": 25, "completion_tokens": chunks, "total_tokens": 25 + chunks}
        self.usage = _chunk(_sse(chunk_obj({}, usage=usage, choices=False)))
        self.done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.n_chunks = chunks
        # the whole stream in one buffer, for the zero-interval case
        self.stream_nousage = self.stream_head + self.role + self.content * chunks + self.finish + self.done
        self.stream_usage = self.stream_head + self.role + self.content * chunks + self.finish + self.usage + self.done


class MockProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse, answer in order, keep alive."""

    __slots__ = ("buf", "busy", "closing", "server", "transport")

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # a delayed response is pending: hold further (pipelined) requests
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer, unless one has to wait."""
        while not self.busy and not self.closing:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.fail()
                return
            head = buf[:end]
            lower = head.lower()
            body_start = end + 4
            length = 0
            chunked = False
            pos = lower.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = lower.find(b"\r\n", pos + 17)
                try:
                    length = int(lower[pos + 17 : stop if stop >= 0 else None])
                except ValueError:
                    self.fail()
                    return
            elif b"\r\ntransfer-encoding: chunked" in lower or b"\r\ntransfer-encoding:chunked" in lower:
                chunked = True
            if chunked:
                decoded = _dechunk(buf, body_start)
                if decoded is None:
                    return  # incomplete
                body, consumed = decoded
            else:
                if len(buf) - body_start < length:
                    return  # incomplete body
                body = buf[body_start : body_start + length]
                consumed = body_start + length
            self.buf = buf[consumed:]
            close = b"\r\nconnection: close" in lower
            line_end = head.find(b"\r\n")
            request_line = head[:line_end if line_end >= 0 else None]
            self.handle(request_line, body, close)

    def fail(self) -> None:
        if self.transport is not None:
            self.transport.write(self.server.bodies.bad_request)
            self.transport.close()
        self.closing = True

    def handle(self, request_line: bytes, body: bytes, close: bool) -> None:
        bodies = self.server.bodies
        parts = request_line.split(b" ")
        if len(parts) < 2:
            self.fail()
            return
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        self.server.requests += 1
        if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
            stream = False
            include_usage = False
            if b'"stream"' in body:  # parse only when the request may ask for a stream
                try:
                    req = json.loads(body)
                except ValueError:
                    self.send(bodies.bad_request, close)
                    return
                stream = req.get("stream") is True
                options = req.get("stream_options")
                include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
            if stream:
                self.start_stream(include_usage, close)
            elif self.server.latency:
                self.busy = True
                asyncio.get_running_loop().call_later(self.server.latency, self.delayed, bodies.completion, close)
            else:
                self.send(bodies.completion, close)
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            self.send(bodies.models, close)
        elif method == b"GET" and path == b"/health":
            self.send(bodies.health, close)
        else:
            self.send(bodies.not_found, close)

    def send(self, data: bytes, close: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if close:
            transport.close()
            self.closing = True

    def delayed(self, data: bytes, close: bool) -> None:
        self.busy = False
        self.send(data, close)
        if self.buf and not self.closing:
            self.process()

    def start_stream(self, include_usage: bool, close: bool) -> None:
        server = self.server
        if not server.latency and not server.interval:
            bodies = server.bodies
            self.send(bodies.stream_usage if include_usage else bodies.stream_nousage, close)
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self.stream_paced(include_usage, close))

    async def stream_paced(self, include_usage: bool, close: bool) -> None:
        server, bodies = self.server, self.server.bodies
        try:
            if server.latency:
                await asyncio.sleep(server.latency)
            if self.transport is None:
                return
            self.transport.write(bodies.stream_head + bodies.role)
            for _ in range(bodies.n_chunks):
                if server.interval:
                    await asyncio.sleep(server.interval)
                if self.transport is None:
                    return
                self.transport.write(bodies.content)
            if self.transport is None:
                return
            self.transport.write(bodies.finish + (bodies.usage if include_usage else b"") + bodies.done)
            if close:
                self.transport.close()
                self.closing = True
        finally:
            self.busy = False
        if self.buf and not self.closing:
            self.process()


def _dechunk(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at ``start``; ``None`` while incomplete."""
    out = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return b"".join(out), trailer_end + 2
        if len(buf) < pos + size + 2:
            return None
        out.append(buf[pos : pos + size])
        pos += size + 2


class MockServer:
    def __init__(self, latency_ms: float, chunks: int, interval_ms: float, token: str) -> None:
        self.latency = latency_ms / 1000.0
        self.interval = interval_ms / 1000.0
        self.bodies = Bodies(chunks, token)
        self.requests = 0


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = MockServer(args.latency_ms, args.chunks, args.chunk_interval_ms, args.token)
    srv = await loop.create_server(lambda: MockProtocol(server), args.host, args.port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = srv.sockets[0].getsockname()[1]
    print(
        f"mock upstream on http://{args.host}:{port}/v1 latency={args.latency_ms}ms chunks={args.chunks} "
        f"interval={args.chunk_interval_ms}ms loop={type(loop).__module__} pid={os.getpid()}",
        flush=True,
    )
    deadline = args.max_seconds
    try:
        if deadline:
            try:
                await asyncio.wait_for(stop.wait(), deadline)
            except TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        srv.close()
        print(f"mock upstream served {server.requests} requests", flush=True)


def run_loop(coro, uvloop_ok: bool = True):  # type: ignore[no-untyped-def]
    """``uvloop.run`` when uvloop is installed (and allowed), else ``asyncio.run``."""
    if uvloop_ok:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only by default)")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each chat response")
    parser.add_argument("--chunks", type=int, default=64, help="content chunks per streamed response")
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0, help="pause between content chunks")
    parser.add_argument("--token", default=" tok", help="the content of every streamed chunk")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="exit after this long (0: never)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.host.startswith("127."):
        parser.error("the benchmark mock listens on loopback only")
    run_loop(serve(args), uvloop_ok=not args.no_uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
