#!/usr/bin/env python3
"""Upstream HTTP client comparison: the cost of the hop Chorus makes to the provider, in isolation.

Each client runs in this one process (pinned to core 1 by default) against the benchmark mock
(started here, pinned to core 0) as a closed loop of ``c`` concurrent tasks for a few seconds. Every
request does what the ``openai`` driver does: POST pre-encoded JSON, read the body, decode it with
msgspec (or json). Reported: requests/s and CPU microseconds per request of this process.

    python3 -m venv benchmarks/.venv-bench
    benchmarks/.venv-bench/bin/pip install httpx aiohttp httpx2 uvloop msgspec
    benchmarks/.venv-bench/bin/python benchmarks/client_compare.py [--seconds 3] [--conc 1 32 128]

Clients: ``chorus.http1`` (what the ``openai`` driver uses; needs Chorus installed in the venv),
httpx.AsyncClient, httpx2, aiohttp, and a ~60-line raw asyncio protocol client (a lower bound).
Missing libraries are skipped. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    import msgspec

    decode = msgspec.json.Decoder().decode
except ImportError:  # pragma: no cover
    decode = json.loads

BODY = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Answer in one short paragraph."},
                 {"role": "user", "content": "Where is my order #4711? I ordered two anvils last Tuesday."}],
    "max_tokens": 256, "temperature": 0.7,
}).encode()
HEADERS = {"content-type": "application/json", "accept": "application/json", "authorization": "Bearer sk-up"}


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


MEASURED: dict[str, float] = {}


async def closed_loop(call, conc: int, seconds: float, measure: bool = True) -> tuple[int, int]:
    """``conc`` tasks calling ``call`` until ``seconds`` pass; records the CPU time it used."""
    loop = asyncio.get_running_loop()
    c0 = cpu()
    stop = loop.time() + seconds
    done = errors = 0

    async def worker() -> None:
        nonlocal done, errors
        while loop.time() < stop:
            try:
                obj = decode(await call())
                if "choices" not in obj:
                    errors += 1
                else:
                    done += 1
            except Exception:  # count and keep going; bounded by ``stop``
                errors += 1
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(conc)))
    if measure:
        MEASURED["cpu"] = cpu() - c0
    return done, errors


async def with_httpx(url: str, conc: int, seconds: float, mod_name: str = "httpx") -> tuple[int, int]:
    mod = __import__(mod_name)
    limits = mod.Limits(max_connections=512, max_keepalive_connections=512)
    async with mod.AsyncClient(base_url=url, headers=HEADERS, limits=limits, timeout=mod.Timeout(600, connect=10),
                               follow_redirects=False) as client:
        async def call() -> bytes:
            r = await client.post("/chat/completions", content=BODY)
            return r.content

        await closed_loop(call, conc, 0.3, False)  # warm the pool
        return await closed_loop(call, conc, seconds)


async def with_aiohttp(url: str, conc: int, seconds: float) -> tuple[int, int]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=512, limit_per_host=512, ttl_dns_cache=300)
    async with aiohttp.ClientSession(base_url=url + "/", headers=HEADERS, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600, connect=10)) as session:
        async def call() -> bytes:
            async with session.post("chat/completions", data=BODY) as r:
                return await r.read()

        await closed_loop(call, conc, 0.3, False)
        return await closed_loop(call, conc, seconds)


async def with_raw(url: str, conc: int, seconds: float) -> tuple[int, int]:
    from loadgen import Conn

    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
            + f"content-length: {len(BODY)}\r\n\r\n").encode()
    request = head + BODY
    idle: list[Conn] = []
    loop = asyncio.get_running_loop()

    async def call() -> bytes:
        conn = idle.pop() if idle else (await loop.create_connection(Conn, host, int(port)))[1]
        resp = await conn.request(request, False)
        if not conn.closed:
            idle.append(conn)
        return resp.body

    await closed_loop(call, conc, 0.3, False)
    result = await closed_loop(call, conc, seconds)
    for c in idle:
        if c.transport:
            c.transport.close()
    return result


async def with_chorus(url: str, conc: int, seconds: float) -> tuple[int, int]:
    from chorus.http1 import HTTPPool

    pool = HTTPPool(url, headers=HEADERS, max_connections=512, timeout=600, connect_timeout=10)

    async def call() -> bytes:
        response = await pool.request("POST", "/chat/completions", BODY)
        return await response.read()

    try:
        await closed_loop(call, conc, 0.3, False)
        return await closed_loop(call, conc, seconds)
    finally:
        await pool.aclose()


CLIENTS = {
    "chorus.http1": with_chorus,
    "httpx": lambda url, c, s: with_httpx(url, c, s, "httpx"),
    "httpx2": lambda url, c, s: with_httpx(url, c, s, "httpx2"),
    "aiohttp": with_aiohttp,
    "raw-asyncio": with_raw,
}


def available(name: str) -> bool:
    mod = {"httpx": "httpx", "httpx2": "httpx2", "aiohttp": "aiohttp", "raw-asyncio": "asyncio",
           "chorus.http1": "chorus.http1"}[name]
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def run_one(name: str, url: str, conc: int, seconds: float) -> dict[str, Any]:
    __import__({"raw-asyncio": "loadgen"}.get(name, name))  # import cost is not per-request cost
    t0 = time.perf_counter()
    coro = CLIENTS[name](url, conc, seconds)
    try:
        import uvloop

        done, errors = uvloop.run(coro)
    except ImportError:
        done, errors = asyncio.run(coro)
    used = MEASURED["cpu"]  # the timed loop only (no imports, no warm-up)
    wall = time.perf_counter() - t0
    return {"client": name, "c": conc, "rps": done / seconds, "errors": errors, "cpu_us_per_req": used / max(1, done) * 1e6,
            "wall_s": wall}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--conc", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", nargs=4, metavar=("CLIENT", "URL", "C", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, url, c, s = args.child
        print(json.dumps(run_one(name, url, int(c), float(s))))
        return 0

    taskset = ["taskset", "-c"] if shutil.which("taskset") else None
    mocks, rows = [], []
    try:
        urls = {}
        for lat in args.latency_ms:
            port = free_port()
            argv = [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(port), "--latency-ms", str(lat),
                    "--max-seconds", "3600"]
            mocks.append(subprocess.Popen(([*taskset, "0"] if taskset else []) + argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
            urls[lat] = f"http://127.0.0.1:{port}/v1"
        time.sleep(1.0)
        for rep in range(args.repeats):
            for lat, url in urls.items():
                for c in args.conc:
                    if lat and c == 1:
                        continue  # 20 req/s tells nothing about the client
                    for name in args.clients:
                        if not available(name):
                            continue
                        argv = [sys.executable, __file__, "--child", name, url, str(c), str(args.seconds)]
                        out = subprocess.run(([*taskset, "1"] if taskset else []) + argv, capture_output=True,
                                             text=True, timeout=args.seconds + 120)
                        if out.returncode != 0:
                            print(f"{name} c={c}: failed: {out.stderr[-400:]}", file=sys.stderr)
                            continue
                        row = json.loads(out.stdout)
                        row["mock_latency_ms"] = lat
                        row["repeat"] = rep
                        rows.append(row)
                        print(f"mock {lat:>4g} ms  c={c:<4} {name:<12} {row['rps']:>9,.0f} req/s  "
                              f"{row['cpu_us_per_req']:>7,.0f} µs CPU/req  errors {row['errors']}", flush=True)
    finally:
        for m in mocks:
            try:
                os.killpg(m.pid, 15)
                m.wait(5)
            except Exception:
                pass
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
