"""CPU per request as instructions counted by callgrind: a comparison that machine load cannot move.

    python benchmarks/instructions.py                          # this checkout's Chorus
    python benchmarks/instructions.py --python /other/.venv/bin/python --label before
    python benchmarks/instructions.py --observability          # bare vs metrics vs metrics + tracing

Wall-clock and CPU-time figures on a shared 2-core machine move with whatever else runs. This
script runs one Chorus server under ``valgrind --tool=callgrind`` with instrumentation off during
startup, warms it up, zeroes the counters, sends ``--requests`` requests per scenario one at a time
(a plain ``model/name=`` request, a ``bot/id=`` request with a backstory, a streamed
``model/name=`` request of 64 chunks, and the plain request with a managed key that has limits and a
budget, ``limited``, created through the admin API first) and reads the instructions the server
executed. ``limited`` minus ``model`` is what limits add per request. The upstream
is ``benchmarks/mock_upstream.py`` outside valgrind. Counts are repeatable to a fraction of a
percent for the same code, so two checkouts (``--python`` of each one's venv) compare exactly.

``--observability`` measures the same checkout three times: *bare* (``[metrics] enabled = false``,
no tracing), *metrics* (the default: Prometheus metrics on) and *metrics + tracing* (also
OpenTelemetry traces exported over OTLP/HTTP to ``chorus.testing.otlp.OtlpCollector``, a stand-in
collector in this process, outside valgrind; the SDK's default batching: an export every 5 s or
every 512 spans; the run waits ``--settle`` seconds, 6 by default here, before zeroing and before
reading the counters, so the exporter thread's last export falls inside the counted window), and
the same with 10 % of traces sampled (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from constants import API_KEY, BACKSTORY, MESSAGES, UPSTREAM_KEY
from procs import free_port

SCHEMA = f"bench_instructions_{os.getpid()}"
ADMIN_KEY = "sk-chorus-bench-admin"
ADMIN_DIGEST = "sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
SCENARIOS = {
    "model": {"model": "model/name=fast/gpt-4o-mini", "messages": MESSAGES},
    "bot": {"model": "bot/id=ada", "messages": MESSAGES},
    "stream": {"model": "model/name=fast/gpt-4o-mini", "messages": MESSAGES, "stream": True},
    "limited": {"model": "model/name=fast/gpt-4o-mini", "messages": MESSAGES},  # with the managed, limited key
}
IDLE_SECONDS = 10.0
#: limits a benchmark never reaches: every check and count runs, no request is refused
LIMITED_KEY = {"name": "bench", "rpm": 1_000_000_000, "tpm": 1_000_000_000_000,
               "budget": {"amount": 1_000_000_000, "period": "month"}}


def config(path: Path, upstream: int, state_url: str | None = None, extra: str = "") -> None:
    state = ""
    if state_url:  # a scratch schema of this run (dropped by the caller)
        state = f'\n[state]\nurl = "{state_url}"\nschema = "{SCHEMA}"\nallow_local_vector_store = true\n'
    path.write_text(f"""
data_dir = "{path.parent / 'data'}"

[server]
admin_keys = ["{ADMIN_DIGEST}"]

[[providers]]
id = "fast"
driver = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o-mini"]
prices = {{ "gpt-4o-mini" = {{ input = 0.15, output = 0.6 }} }}

[[workspaces]]
id = "bench"
api_keys = ["{API_KEY}"]

[[bots]]
id = "ada"
workspace = "bench"
name = "Ada"
model = "fast/gpt-4o-mini"
backstory = {json.dumps(BACKSTORY)}
params = {{ temperature = 0.2, max_tokens = 400 }}
""" + state + extra)


def send(port: int, body: dict[str, object], key: str = API_KEY, path: str = "/v1/chat/completions") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, json.dumps(body).encode(),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"{response.status}: {data[:200]!r}")
        return data
    finally:
        conn.close()


def wait_health(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during startup")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not become healthy")


def total_instructions(out_file: Path) -> int:
    """Sum of the ``totals:`` (or ``summary:``) lines of every callgrind dump written so far."""
    total = 0
    for dump in out_file.parent.glob(out_file.name + "*"):
        match = re.search(rb"^(?:totals|summary): (\d+)", dump.read_bytes(), re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def measure(python: str, requests: int, warmup: int, state_url: str | None = None, extra: str = "",
            environ: dict[str, str] | None = None, settle: float = 0.0) -> dict[str, float]:
    """Instructions per request of each scenario; ``extra`` is appended to the configuration,
    ``environ`` added to the server's environment, ``settle`` seconds waited before zeroing and before
    reading the counters (for work a background thread finishes later, such as span exports)."""
    work = Path(tempfile.mkdtemp(prefix="chorus-instr-"))
    upstream_port, port = free_port(), free_port()
    mock = subprocess.Popen([python, str(HERE / "mock_upstream.py"), "--port", str(upstream_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config(work / "chorus.toml", upstream_port, state_url, extra)
    out = work / "callgrind.out"
    env = dict(os.environ, PYTHONHASHSEED="0", **(environ or {}))
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         python, "-m", "chorus.cli", "serve", "--config", str(work / "chorus.toml"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    results: dict[str, float] = {}
    try:
        wait_health(port, server, 600)
        limited = json.loads(send(port, LIMITED_KEY, ADMIN_KEY, "/admin/v1/workspaces/bench/keys"))["key"]
        control(server.pid, "-i", "on")
        for name, body in SCENARIOS.items():
            key = limited if name == "limited" else API_KEY
            for _ in range(warmup):
                send(port, body, key)
            time.sleep(settle)
            before = total_instructions(out)
            control(server.pid, "-z")  # zero, so the next dump holds only this scenario
            started = time.monotonic()
            for _ in range(requests):
                send(port, body, key)
            time.sleep(settle)
            control(server.pid, "-d")
            results[name] = (total_instructions(out) - before) / requests
            results[f"{name} (seconds per request under valgrind)"] = (time.monotonic() - started) / requests
        # What the server runs with no request at all (timers: usage flush, limits sync, signals
        # poll), per second: under valgrind a request takes tens of milliseconds, so time-driven work
        # shows up in the per-request counts above in proportion (far less at real request rates).
        before = total_instructions(out)
        control(server.pid, "-z")
        time.sleep(IDLE_SECONDS)
        control(server.pid, "-d")
        results["idle per second"] = (total_instructions(out) - before) / IDLE_SECONDS
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        mock.terminate()
        mock.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        if state_url:
            subprocess.run([python, "-c", "import asyncio, asyncpg, sys\n"
                            "async def drop():\n"
                            "    conn = await asyncpg.connect(sys.argv[1])\n"
                            f"    await conn.execute('DROP SCHEMA IF EXISTS {SCHEMA} CASCADE')\n"
                            "    await conn.close()\n"
                            "asyncio.run(drop())", state_url], check=False, timeout=60)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose chorus is measured")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--state-url", help="also measure with [state] url = this PostgreSQL (a scratch schema)")
    parser.add_argument("--settle", type=float, help="seconds to wait before zeroing and before reading the counters")
    parser.add_argument("--only", help="--observability: only these variants (separated by ;)")
    parser.add_argument("--observability", action="store_true",
                        help="measure bare (metrics off), metrics on, and metrics + tracing to a stand-in OTLP collector")
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.observability:
        return observability(args)
    runs = [("embedded state", None)] + ([("postgresql state", args.state_url)] if args.state_url else [])
    for backend, url in runs:
        results = measure(args.python, args.requests, args.warmup, url, settle=args.settle or 0.0)
        print(json.dumps({"label": args.label, "state": backend,
                          "instructions_per_request": {k: round(v, 4) if "seconds" in k else round(v)
                                                       for k, v in results.items()}}))
    return 0


def observability(args: argparse.Namespace) -> int:
    """Bare, metrics, metrics + tracing: one server each, the same scenarios, the same settle time."""
    from chorus.testing.otlp import OtlpCollector

    settle = args.settle if args.settle is not None else 6.0
    variants: list[tuple[str, str, dict[str, str]]] = [
        ("bare", "\n[metrics]\nenabled = false\n", {}),
        ("metrics", "", {}),
    ]
    with OtlpCollector() as collector:
        variants.append(("metrics + tracing", "", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_SERVICE_NAME": "chorus-bench"}))
        variants.append(("metrics + tracing, 10 % sampled", "", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_SERVICE_NAME": "chorus-bench",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}))
        for name, extra, environ in variants:
            if args.only and name not in args.only.split(";"):
                continue
            results = measure(args.python, args.requests, args.warmup, None, extra, environ, settle)
            print(json.dumps({"label": args.label, "variant": name,
                              "instructions_per_request": {k: round(v, 4) if "seconds" in k else round(v)
                                                           for k, v in results.items()}}), flush=True)
        print(json.dumps({"otlp_exports": len(collector.exports),
                          "otlp_bytes": sum(size for _, _, size in collector.exports)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
