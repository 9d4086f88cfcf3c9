#!/usr/bin/env python3
"""An efficient asyncio HTTP/1.1 load generator for the benchmark (uvloop when installed).

Raw ``asyncio.Protocol`` connections with keep-alive: a request is one pre-built bytes object, a
response is parsed with ``bytes.find`` and an incremental chunked decoder, so the client costs a
few microseconds per request. ``wrk`` is used for throughput ladders (see ``run.py``); this client
measures what wrk cannot:

* ``latency``: concurrency 1, targets **interleaved** round by round (each round visits every
  target in a rotated order), per-request latency samples -> p50/p90/p99 per target.
* ``stream``: concurrency 1, interleaved, streaming requests -> time to first token (the first SSE
  event with non-empty ``delta.content``), SSE events per stream, chunks/s per stream.
* ``closed``: a closed loop of ``--concurrency`` connections for ``--duration`` seconds against one
  target, streaming or not -> requests/s, events/s (streaming), p50/p99, errors. It is the fallback
  for wrk and the streaming relay-rate measurement.

Targets come from a JSON file: ``[{"name", "host", "port", "path", "auth", "body", "stream"}]``.
The result is one JSON object on stdout. Only loopback hosts are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

perf = time.perf_counter


class Response:
    __slots__ = ("body", "events", "ok", "status", "t_end", "t_first_byte", "t_first_token")

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.events = 0
        self.t_first_byte = 0.0
        self.t_first_token = 0.0
        self.t_end = 0.0
        self.ok = False


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.reset()

    def reset(self) -> None:
        self.buf = b""
        self.in_body = False
        self.length = -1
        self.chunked = False
        self.remaining = 0
        self.skip = 0
        self.pending = b""
        self.parts: list[bytes] = []
        self.tail = b""
        self.sse_text = b""  # payload kept until the first token is seen
        self.resp = Response()
        self.stream = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, data: bytes, stream: bool) -> asyncio.Future[Response]:
        self.reset()
        self.stream = stream
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if not resp.t_first_byte:
            resp.t_first_byte = perf()
        if not self.in_body:
            buf = self.buf + data if self.buf else data
            if buf.startswith(b"\r\n"):  # the CRLF after a previous chunked body's last chunk
                buf = buf[2:]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            try:
                resp.status = int(head[9:12])
            except ValueError:
                self.finish(False)
                return
            pos = head.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 17)
                self.length = int(head[pos + 17 : stop if stop >= 0 else None])
            elif b"transfer-encoding: chunked" in head:
                self.chunked = True
            else:
                self.length = 0
            self.in_body = True
            self.buf = b""
            data = buf[end + 4 :]
        if self.chunked:
            self.feed_chunked(data)
        else:
            self.parts.append(data)
            have = sum(len(p) for p in self.parts) if len(self.parts) > 1 else len(data)
            if have >= self.length:
                body = b"".join(self.parts)
                resp.body = body[: self.length]
                if self.stream:  # an SSE body sent with content-length
                    self.on_payload(resp.body)
                self.finish(True)

    def feed_chunked(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
            self.pending = b""
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                self.on_payload(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.skip = 2
            elif self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.pending = data[pos:]
                    return
                size = int(data[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:  # last chunk; the final CRLF is skipped by the next response
                    self.finish(True)
                    return
                self.remaining = size

    def on_payload(self, payload: bytes) -> None:
        resp = self.resp
        if not self.stream:
            self.parts.append(payload)
            return
        resp.events += (self.tail + payload).count(b"\n\n")
        self.tail = payload[-1:]
        if not resp.t_first_token:
            self.sse_text += payload
            while True:
                end = self.sse_text.find(b"\n\n")
                if end < 0:
                    break
                event, self.sse_text = self.sse_text[:end], self.sse_text[end + 2 :]
                if has_token(event):
                    resp.t_first_token = perf()
                    self.sse_text = b""
                    break

    def finish(self, ok: bool) -> None:
        resp = self.resp
        resp.t_end = perf()
        if self.chunked and not self.stream:
            resp.body = b"".join(self.parts)
        resp.ok = ok and 200 <= resp.status < 300
        self.in_body = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)


def has_token(event: bytes) -> bool:
    """True for an SSE ``data:`` event whose first choice has non-empty ``delta.content`` (chat), or a
    ``response.output_text.delta`` event with a non-empty ``delta`` (Responses)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if b'"response.output_text.delta"' in data:
                try:
                    return bool(json.loads(data).get("delta"))
                except (ValueError, AttributeError):
                    return False
            if data == b"[DONE]" or b"content" not in data:
                return False
            try:
                obj = json.loads(data)
                choices = obj.get("choices") or []
                return bool(choices and (choices[0].get("delta") or {}).get("content"))
            except (ValueError, AttributeError):
                return False
    return False


class Target:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = spec["name"]
        self.host = spec.get("host", "127.0.0.1")
        if not (self.host.startswith("127.") or self.host in ("localhost", "::1")):
            raise SystemExit(f"loadgen: refusing non-loopback host {self.host!r}")
        self.port = int(spec["port"])
        self.stream = bool(spec.get("stream", False))
        body = spec["body"].encode() if isinstance(spec["body"], str) else json.dumps(spec["body"]).encode()
        headers = [
            f"POST {spec.get('path', '/v1/chat/completions')} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream" if self.stream else "Accept: application/json",
            f"Content-Length: {len(body)}",
        ]
        if spec.get("auth"):
            headers.append(f"Authorization: {spec['auth']}")
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body

    async def connect(self) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Conn, self.host, self.port)
        return conn


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.events = 0
        self.stream_time = 0.0
        self.errors = 0
        self.non2xx = 0
        self.error_samples: list[str] = []

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(text[:300])


async def one(target: Target, conn: Conn | None, stats: Stats, timeout: float, record: bool = True) -> Conn | None:
    """Send one request on ``conn`` (reconnecting if needed); returns the connection to reuse."""
    try:
        if conn is None or conn.closed:
            conn = await asyncio.wait_for(target.connect(), timeout)
        t0 = perf()
        resp = await asyncio.wait_for(conn.request(target.request, target.stream), timeout)
    except (TimeoutError, OSError, ConnectionError) as exc:
        if record:
            stats.error(f"{type(exc).__name__}: {exc}")
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        return None
    if not resp.ok:
        if record:
            stats.non2xx += 1
            stats.error(f"status {resp.status}: {resp.body[:200]!r}")
        return conn
    if target.stream and (resp.events < 2 or not resp.t_first_token):
        if record:
            stats.error(f"stream without tokens ({resp.events} events)")
        return conn
    if not target.stream and b'"choices"' not in resp.body and b'"output"' not in resp.body:
        if record:
            stats.error(f"response without choices: {resp.body[:200]!r}")
        return conn
    if record:
        stats.lat.append(resp.t_end - t0)
        if target.stream:
            stats.ttft.append(resp.t_first_token - t0)
            stats.events += resp.events
            stats.stream_time += resp.t_end - t0
    return conn


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def summary(stats: Stats, wall: float | None = None) -> dict[str, Any]:
    us = 1e6
    out: dict[str, Any] = {
        "requests": len(stats.lat),
        "errors": stats.errors,
        "non2xx": stats.non2xx,
        "error_samples": stats.error_samples,
        "p50_us": pct(stats.lat, 50) * us,
        "p90_us": pct(stats.lat, 90) * us,
        "p99_us": pct(stats.lat, 99) * us,
        "mean_us": (sum(stats.lat) / len(stats.lat) * us) if stats.lat else float("nan"),
    }
    if stats.ttft:
        out.update(
            ttft_p50_us=pct(stats.ttft, 50) * us,
            ttft_p90_us=pct(stats.ttft, 90) * us,
            ttft_p99_us=pct(stats.ttft, 99) * us,
            events=stats.events,
            events_per_stream=stats.events / len(stats.ttft),
            # per-stream relay rate: events over the time the streams were open
            stream_events_per_s=stats.events / stats.stream_time if stats.stream_time else 0.0,
        )
    if wall:
        out["wall_s"] = wall
        out["rps"] = len(stats.lat) / wall
        if stats.events:
            out["events_per_s"] = stats.events / wall
    return out


async def interleaved(targets: list[Target], rounds: int, per_round: int, warmup: int, timeout: float) -> dict[str, Any]:
    """Concurrency 1, every target visited in every round (order rotated), samples pooled."""
    conns: dict[str, Conn | None] = {t.name: None for t in targets}
    stats = {t.name: Stats() for t in targets}
    for t in targets:
        for _ in range(warmup):
            conns[t.name] = await one(t, conns[t.name], stats[t.name], timeout, record=False)
    per_round_p50: dict[str, list[float]] = {t.name: [] for t in targets}
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for t in order:
            start = len(stats[t.name].lat)
            for _ in range(per_round):
                conns[t.name] = await one(t, conns[t.name], stats[t.name], timeout)
            per_round_p50[t.name].append(pct(stats[t.name].lat[start:], 50) * 1e6)
    for conn in conns.values():
        if conn is not None and conn.transport is not None:
            conn.transport.close()
    result = {}
    for t in targets:
        result[t.name] = summary(stats[t.name])
        result[t.name]["round_p50_us"] = per_round_p50[t.name]
    return result


async def closed(target: Target, concurrency: int, duration: float, warmup: float, timeout: float) -> dict[str, Any]:
    """A closed loop of ``concurrency`` connections for ``duration`` seconds (after ``warmup``)."""
    stats = Stats()
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    t_measure = t_start + warmup
    t_stop = t_measure + duration

    async def worker() -> None:
        conn: Conn | None = None
        dummy = Stats()
        while True:
            now = loop.time()
            if now >= t_stop:
                break
            conn = await one(target, conn, stats if now >= t_measure else dummy, timeout)
            if conn is None:
                await asyncio.sleep(0.01)  # back off on connection errors (bounded by t_stop)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = max(1e-9, min(loop.time(), t_stop + timeout) - t_measure)
    return summary(stats, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["latency", "stream", "closed"])
    parser.add_argument("--targets", required=True, help="JSON file with a list of target specs")
    parser.add_argument("--only", help="closed mode: the target name to load (default: the first)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=50, help="requests per target (latency/stream) or seconds (closed)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    with open(args.targets) as f:
        specs = json.load(f)
    targets = [Target(s) for s in specs]
    if args.mode in ("latency", "stream"):
        if args.mode == "stream":
            for t in targets:
                if not t.stream:
                    raise SystemExit(f"loadgen: target {t.name} is not a streaming target")
        coro = interleaved(targets, args.rounds, args.per_round, int(args.warmup), args.timeout)
    else:
        target = next((t for t in targets if t.name == args.only), targets[0]) if args.only else targets[0]
        coro = closed(target, args.concurrency, args.duration, args.warmup, args.timeout)
    result = run_loop(coro, not args.no_uvloop)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


def run_loop(coro, uvloop_ok: bool = True):  # type: ignore[no-untyped-def]
    if uvloop_ok:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
