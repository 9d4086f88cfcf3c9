"""The run's state and how load is driven: ``Target`` (a request route: port, body, auth, serving
process) and ``Bench`` (options, tools, settings, targets, results; closed-loop runs with wrk or the
asyncio load generator, with the CPU and RSS of the serving process tree)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from constants import API_KEY, DRIVER_CORE, GATEWAY_CORE, HERE, HOST, MESSAGES, REPO
from procs import Proc, http_request


class Target:
    """A request route: where to send, which body, how to authenticate, which process serves it."""

    def __init__(self, name: str, label: str, port: int, model: str, proc: Proc, *, stream: bool = False,
                 auth: bool = True, messages: list[dict[str, str]] | None = None, responses: bool = False,
                 store: bool = False) -> None:
        """``responses``: the same request as ``POST /v1/responses`` (``input``, ``max_output_tokens``;
        ``store`` as given, default false so it does the same work as the chat request)."""
        self.name, self.label, self.port, self.model, self.proc, self.stream = name, label, port, model, proc, stream
        self.auth = f"Bearer {API_KEY}" if auth else ""
        self.responses = responses
        self.path = "/v1/responses" if responses else "/v1/chat/completions"
        body: dict[str, Any]
        if responses:
            body = {"model": model, "input": messages or MESSAGES, "max_output_tokens": 256, "temperature": 0.7,
                    "store": store}
            if stream:
                body["stream"] = True
        else:
            body = {"model": model, "messages": messages or MESSAGES, "max_tokens": 256, "temperature": 0.7}
            if stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
        self.body = json.dumps(body)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "host": HOST, "port": self.port, "path": self.path,
                "auth": self.auth, "body": self.body, "stream": self.stream}

    def check(self) -> str | None:
        """One real request; ``None`` when it works, else why not."""
        try:
            status, body = http_request("POST", self.port, self.path, self.body.encode(),
                                        {"content-type": "application/json", "authorization": self.auth}, timeout=30)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"status {status}: {body[:300]!r}"
        end, shape = (b"response.completed", b'"output"') if self.responses else (b"data: [DONE]", b'"choices"')
        if self.stream and end not in body:
            return f"stream without {end.decode()}: {body[:300]!r}"
        if not self.stream and shape not in body:
            return f"no {shape.decode()}: {body[:300]!r}"
        return None


class Bench:
    """One run: its options, tools and settings, the servers and targets started, the results so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.out = Path(args.results_dir or HERE / "results" / stamp)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.python = args.python or (str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable)
        self.chorus_bin = args.chorus_bin or self._find_chorus()
        self.litellm_venv = Path(args.litellm_venv or HERE / ".venv-litellm")
        self.wrk = shutil.which("wrk") if not args.no_wrk else None
        q = self.quick
        self.rung_seconds = args.duration or (2.0 if q else 8.0)
        self.repeats = args.repeats or (2 if q else 3)
        self.lat_rounds = 3 if q else 7
        self.lat_per_round = 200 if q else 300
        self.stream_rounds = 3 if q else 5
        self.stream_per_round = 30 if q else 60
        self.stream_chunks = args.chunks
        self.stream_conc = 8
        self.ladder = [1, 8, 32, 128]
        self.mock_latencies = [0, 50]
        self.results: dict[str, Any] = {"settings": {}, "notes": []}
        self.targets: dict[str, Target] = {}
        self.gateways: dict[str, Proc] = {}
        self.up_fast = self.up_slow = 0  # the upstream mocks' ports (0 ms, 50 ms), set by scenarios.setup
        self.litellm_problem: str | None = None

    def _find_chorus(self) -> str:
        local = REPO / ".venv/bin/chorus"
        if local.exists():
            return str(local)
        found = shutil.which("chorus")
        if not found:
            raise SystemExit("run.py: no `chorus` executable (create .venv and `pip install -e .`, or pass --chorus-bin)")
        return found

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)

    def save(self) -> None:
        """Rewrite ``results.json``: after every scenario, so an interrupted run keeps what it measured."""
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))

    def available(self, *keys: str) -> list[Target]:
        """The targets of these keys that were started (LiteLLM's may be missing)."""
        return [self.targets[k] for k in keys if k in self.targets]

    def settings(self) -> dict[str, Any]:
        """The run's settings, as ``results.json`` and the report record them."""
        return {
            "quick": self.quick, "rung_seconds": self.rung_seconds, "repeats": self.repeats,
            "lat_rounds": self.lat_rounds, "lat_per_round": self.lat_per_round, "stream_rounds": self.stream_rounds,
            "stream_per_round": self.stream_per_round, "stream_chunks": self.stream_chunks,
            "stream_concurrency": self.stream_conc, "ladder": self.ladder, "mock_latencies": self.mock_latencies,
            "load_generator": "wrk" if self.wrk else "asyncio loadgen", "gateway_core": GATEWAY_CORE,
            "driver_core": DRIVER_CORE,
        }

    # -- load generators --------------------------------------------------------------------------

    def loadgen(self, mode: str, targets: list[Target], extra: list[str], timeout: float,
                cores: str | None = DRIVER_CORE) -> dict[str, Any]:
        """One run of ``loadgen.py`` (``latency``, ``stream`` or ``closed``) at these targets; its JSON."""
        spec = self.out / f"targets-{mode}.json"
        spec.write_text(json.dumps([t.spec() for t in targets]))
        argv = [self.python, str(HERE / "loadgen.py"), mode, "--targets", str(spec), *extra]
        if cores is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cores, *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen {mode} failed: {out.stderr[-1500:]}")
        return json.loads(out.stdout)

    def closed_run(self, target: Target, concurrency: int, seconds: float, cores: str | None = DRIVER_CORE) -> dict[str, Any]:
        """One closed-loop run: wrk for plain requests (when installed), else the asyncio client."""
        proc = target.proc
        cpu0 = proc.cpu_seconds()
        if self.wrk and not target.stream:
            res = self.wrk_run(target, concurrency, seconds, cores)
        else:
            spec = ["--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "0",
                    "--timeout", "10"]
            res = self.loadgen("closed", [target], spec, timeout=seconds + 60, cores=cores)
            res["tool"] = "loadgen"
        res["cpu_s"] = proc.cpu_seconds() - cpu0
        n = res.get("events") if target.stream else res.get("requests")
        res["cpu_us_per_req"] = res["cpu_s"] / res["requests"] * 1e6 if res.get("requests") else None
        if target.stream and n:
            res["cpu_us_per_event"] = res["cpu_s"] / n * 1e6
        res["rss_mb"] = proc.rss_bytes() / 2**20
        return res

    def wrk_run(self, target: Target, concurrency: int, seconds: float, cores: str | None) -> dict[str, Any]:
        """One closed-loop wrk run with ``post.lua``; its BENCH_JSON summary, errors and non-2xx counted."""
        assert self.wrk is not None
        body = self.out / f"body-{target.name}-{target.port}.json"
        body.write_text(target.body)
        env = dict(os.environ, BENCH_BODY_FILE=str(body), BENCH_AUTH=target.auth)
        argv = [self.wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s",
                str(HERE / "post.lua"), f"http://{HOST}:{target.port}{target.path}"]
        if cores is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cores, *argv]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {out.stdout[-800:]} {out.stderr[-800:]}")
        res = json.loads(line[len("BENCH_JSON "):])
        secs = res["duration_us"] / 1e6
        errors = res["connect_errors"] + res["read_errors"] + res["write_errors"] + res["timeouts"]
        ok = max(0, res["requests"] - res["non2xx"])
        return {"tool": "wrk", "requests": ok, "rps": ok / secs if secs else 0.0, "errors": errors + res["non2xx"],
                "non2xx": res["non2xx"], "p50_us": res["p50_us"], "p90_us": res["p90_us"], "p99_us": res["p99_us"],
                "wall_s": secs}

