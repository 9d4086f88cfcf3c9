"""CPU per request of access control and accounting, without the HTTP server around it.

    python benchmarks/limits_micro.py

Times, in one process on the real embedded signals (SQLite in a temporary data dir):

* ``identify`` of a config-file key and of a cached managed key;
* ``admit`` of a key with ``rpm``, ``tpm`` and a budget (every check and local count runs; the
  limits are never reached), and of an unlimited key (nothing to do);
* ``account`` of one upstream ``usage`` plus ``finish`` (the usage record queued, tokens and spend
  counted locally);
* one background ``sync`` of the three counters (pushed to the shared counters, totals read back),
  which runs every 0.2 s per process while a limited key is busy, whatever the request rate.

The request-path figures are what limits and usage recording add per request; the sync is a cost
per 0.2 s, not per request. (``benchmarks/instructions.py`` counts whole requests under callgrind,
where a request takes ~0.1 s and time-driven work such as the sync is attributed to it in
proportion.)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from chorus.config import parse_config
from chorus.contract.config import Budget, Limits
from chorus.contract.context import RequestContext
from chorus.contract.schemas import ChatCompletionRequest, Message
from chorus.contract.targets import Target
from chorus.runtime.pipeline import account
from chorus.runtime.services import Services

N = 20_000
CONFIG = """
data_dir = "{data}"
[server]
admin_keys = ["sha256:{admin}"]
[[providers]]
id = "fast"
driver = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["gpt-4o-mini"]
prices = {{ "gpt-4o-mini" = {{ input = 0.15, output = 0.6 }} }}
[[workspaces]]
id = "bench"
api_keys = ["sk-bench-config-key"]
"""
USAGE = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}


def per_call(fn_total: float, n: int) -> float:
    return fn_total / n * 1e6


async def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="chorus-limits-micro-"))
    config = parse_config(tomllib.loads(CONFIG.format(data=data, admin="0" * 64)), env={})
    services = Services(config)
    await services.state.start()
    access = services.access
    await access.start()
    try:
        _, limited_secret = await access.create_key(
            "bench", "limited", limits=Limits(rpm=10**9, tpm=10**12), budget=Budget(amount=10**9, period="month"))
        _, plain_secret = await access.create_key("bench", "plain")
        provider = services.registry.providers["fast"]
        target = Target(selector="model/name=fast/gpt-4o-mini", kind="model", provider=provider, model="gpt-4o-mini")
        request = ChatCompletionRequest(model=target.selector, messages=[Message(role="user", content="hi")])
        results: dict[str, list[float]] = {}

        async def timed(name: str, body: object) -> None:
            for _ in range(3):
                started = time.process_time()
                await body()  # type: ignore[operator]
                results.setdefault(name, []).append(per_call(time.process_time() - started, N))

        async def identify_config() -> None:
            for _ in range(N):
                await access.identify("sk-bench-config-key")

        async def identify_managed() -> None:
            for _ in range(N):
                await access.identify(limited_secret)

        limited = await access.identify(limited_secret)
        plain = await access.identify(plain_secret)

        async def admit_limited() -> None:
            for _ in range(N):
                await access.admit(limited)

        async def admit_plain() -> None:
            for _ in range(N):
                await access.admit(plain)

        def context(caller_key: str) -> RequestContext:
            ctx = RequestContext(request_id="req_x", workspace=limited.workspace, registry=services.registry,
                                 request=request)
            ctx.key_id = caller_key
            ctx.target = target
            return ctx

        async def finish(caller_key: str) -> None:
            for _ in range(N):
                ctx = context(caller_key)
                account(ctx, target, USAGE)
                access.finish(ctx, "ok")
            access._pending.clear()  # not written: the flush is timed on its own below

        await access.admit(limited)  # the counters exist and are fresh
        await timed("identify, config-file key", identify_config)
        await timed("identify, managed key (cached)", identify_managed)
        await timed("admit, unlimited key", admit_plain)
        await timed("admit, key with rpm + tpm + budget", admit_limited)
        await timed("account + finish, unlimited key", lambda: finish(plain.key_id))
        await timed("account + finish, limited key", lambda: finish(limited.key_id))

        syncs = []
        for _ in range(20):
            await access.admit(limited)
            access.finish(context(limited.key_id), "ok")
            started = time.process_time()
            await access.sync()
            syncs.append((time.process_time() - started) * 1e6)
        flushes = []
        for _ in range(10):
            for _ in range(200):
                ctx = context(plain.key_id)
                account(ctx, target, USAGE)
                access.finish(ctx, "ok")
            started = time.process_time()
            await access.flush()
            flushes.append((time.process_time() - started) * 1e6 / 200)
        for name, values in results.items():
            print(f"{name:45s} {statistics.median(values):7.2f} µs CPU per request")
        print(f"{'sync of 3 counters (every 0.2 s while busy)':45s} {statistics.median(syncs):7.0f} µs CPU per sync")
        print(f"{'usage write, batches of 200 (every 1 s)':45s} {statistics.median(flushes):7.2f} µs CPU per record")
    finally:
        await access.aclose()
        await services.state.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
