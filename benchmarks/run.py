#!/usr/bin/env python3
"""Chorus benchmark: the mock directly vs Chorus vs LiteLLM proxy, side by side, interleaved.

    python benchmarks/run.py --quick          # ~4 minutes, for iteration
    python benchmarks/run.py                  # the full run (~20 minutes)
    python benchmarks/run.py --soak 300       # add a 5-minute soak (RSS at start and end)
    python benchmarks/run.py --profile        # add a py-spy profile of Chorus under load

Writes raw results to ``benchmarks/results/<stamp>/`` and the results section of
``docs/benchmarks.md`` (between the ``benchmark-results`` markers). Method: ``docs/benchmarks.md``.

Only loopback addresses are used; every loop is bounded; every process this script starts is
stopped on exit, on errors and on Ctrl-C (and gets SIGTERM if this script dies).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
START_MARK = "<!-- benchmark-results:start -->"
END_MARK = "<!-- benchmark-results:end -->"
LITELLM_VERSION = "1.106.12"  # newest release whose [proxy] extra resolves from PyPI here; see docs
API_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-bench-key"
HOST = "127.0.0.1"
GATEWAY_CORE = "1"
DRIVER_CORE = "0"  # the upstream mock and the load generator

BACKSTORY = (
    "You are Ada, the support agent of Acme Anvils. You answer questions about orders, shipping, "
    "returns and the product catalogue. Be brief, friendly and precise. Never promise delivery dates "
    "that the order system has not confirmed; when unsure, say so and offer to open a ticket. Prices "
    "are in euros and include VAT. Returns are accepted within 30 days in the original packaging. "
    "Refuse politely to discuss competitors' products or anything unrelated to Acme."
)
MESSAGES = [
    {"role": "system", "content": "Answer in one short paragraph."},
    {"role": "user", "content": "Where is my order #4711? I ordered two anvils last Tuesday."},
]
# The retrieval bot: Ada's backstory plus a dataset of the project's own docs (a snapshot copied
# into the results directory), asked a question those docs answer, so every request retrieves.
RAG_BOT = "ada-docs"
RAG_DATASET = "chorus-docs-bench"
RAG_DOCS = "dataset-docs"  # under the results directory, next to chorus.toml
RAG_TOP_K = 5
RAG_MESSAGES = [
    {"role": "system", "content": "Answer in one short paragraph."},
    {"role": "user", "content": "How do I configure a dataset for a bot, and how are its sources cited?"},
]


# ------------------------------------------------------------------------------------------------
# processes


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM the child if this script dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Proc:
    """A server process in its own session, pinned with taskset, logged to a file."""

    live: list[Proc] = []

    def __init__(self, name: str, argv: list[str], cores: str | None, log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.cores = cores
        self.log_path = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        argv = list(self.argv)
        if self.cores is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", self.cores, *argv]
        self.log = open(self.log_path, "ab")
        self.log.write(f"$ {' '.join(argv)}\n".encode())
        self.log.flush()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
            cwd=str(REPO),
        )
        if self.cores is not None and not shutil.which("taskset"):
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(self.popen.pid, {int(c) for c in self.cores.split(",")})
        Proc.live.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        else:  # the leader is gone; children of its session may remain
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- /proc accounting (psutil when installed) ------------------------------------------------

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def rss_bytes(self) -> int:
        return sum(status_kb(pid, "VmRSS") for pid in self.tree()) * 1024

    def peak_rss_bytes(self) -> int:
        """Sum of VmHWM (peak resident set) over the process tree; exact for one process."""
        return sum(status_kb(pid, "VmHWM") for pid in self.tree()) * 1024


def stop_all() -> None:
    for proc in reversed(list(Proc.live)):
        with contextlib.suppress(Exception):
            proc.stop()


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, read from /proc (``taskset`` execs, so ``root`` is the server)."""
    try:
        import psutil  # type: ignore[import-not-found]

        p = psutil.Process(root)
        return [root] + [c.pid for c in p.children(recursive=True)]
    except Exception:
        pass
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (children that exited are not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_times() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_request(method: str, port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during startup:\n{proc.tail()}")
        try:
            status, _ = http_request("GET", port, path, timeout=2)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready after {timeout:.0f} s ({last}):\n{proc.tail()}")


# ------------------------------------------------------------------------------------------------
# targets


class Target:
    """A request route: where to send, which body, how to authenticate, which process serves it."""

    def __init__(self, name: str, label: str, port: int, model: str, proc: Proc, *, stream: bool = False,
                 auth: bool = True, messages: list[dict[str, str]] | None = None) -> None:
        self.name, self.label, self.port, self.model, self.proc, self.stream = name, label, port, model, proc, stream
        self.auth = f"Bearer {API_KEY}" if auth else ""
        body: dict[str, Any] = {"model": model, "messages": messages or MESSAGES, "max_tokens": 256, "temperature": 0.7}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        self.body = json.dumps(body)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "host": HOST, "port": self.port, "path": "/v1/chat/completions",
                "auth": self.auth, "body": self.body, "stream": self.stream}

    def check(self) -> str | None:
        """One real request; ``None`` when it works, else why not."""
        try:
            status, body = http_request("POST", self.port, "/v1/chat/completions", self.body.encode(),
                                {"content-type": "application/json", "authorization": self.auth}, timeout=30)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"status {status}: {body[:300]!r}"
        if self.stream and b"data: [DONE]" not in body:
            return f"stream without [DONE]: {body[:300]!r}"
        if not self.stream and b'"choices"' not in body:
            return f"no choices: {body[:300]!r}"
        return None


# ------------------------------------------------------------------------------------------------
# the harness


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
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
        self.litellm_problem: str | None = None

    # -- environment ------------------------------------------------------------------------------

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

    def machine(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
            info["cpu"] = fields.get("Model name", info["cpu"]).strip()
            info["cores"] = int(fields.get("CPU(s)", info["cores"] or 0))
            if fields.get("Hypervisor vendor"):
                info["cpu"] += f" ({fields['Hypervisor vendor'].strip()} guest)"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["server_python"] = subprocess.run(
                [self.python, "-c", "import platform;print(platform.python_version())"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["chorus"] = subprocess.run([self.chorus_bin, "--version"], capture_output=True, text=True,
                                            timeout=30).stdout.strip().replace("chorus ", "")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            code = ("import importlib.metadata as m\nfor d in ('litestar','msgspec','aiohttp','httpx','uvicorn','uvloop','httptools','pluggy'):\n"
                    "  try: print(d, m.version(d))\n  except Exception: print(d, '-')")
            out = subprocess.run([self.python, "-c", code], capture_output=True, text=True, timeout=30).stdout
            info["stack"] = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            out = subprocess.run([self.chorus_bin, "plugins", "--json"], capture_output=True, text=True, timeout=60)
            listed = json.loads(out.stdout)
            info["plugins"] = sorted({f"{p['group'].removeprefix('chorus.')}:{p['name']} ({p['distribution']})"
                                      for p in listed.get("plugins", [])})
            info["plugin_failures"] = [f"{f['group']}:{f['name']}: {f['error']}" for f in listed.get("failures", [])]
        if self.wrk:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True, timeout=10)
                m = re.search(r"wrk (\S+)", out.stdout + out.stderr)
                info["wrk"] = m.group(1) if m else "?"
        return info

    # -- LiteLLM ----------------------------------------------------------------------------------

    def ensure_litellm(self) -> str | None:
        """The ``litellm`` executable, installing it into its own venv if needed; None if unavailable."""
        exe = self.litellm_venv / "bin" / "litellm"
        if exe.exists():
            return str(exe)
        if self.args.no_litellm_install:
            self.litellm_problem = f"not installed ({exe} missing; --no-litellm-install given)"
            return None
        self.log(f"installing litellm[proxy]=={LITELLM_VERSION} into {self.litellm_venv} (one time, a few minutes)")
        log = self.out / "logs" / "litellm-install.log"
        with open(log, "wb") as f:
            try:
                subprocess.run([sys.executable, "-m", "venv", str(self.litellm_venv)], check=True, stdout=f,
                               stderr=subprocess.STDOUT, timeout=300)
                subprocess.run([str(self.litellm_venv / "bin" / "pip"), "install", "-q",
                                f"litellm[proxy]=={LITELLM_VERSION}"], check=True, stdout=f, stderr=subprocess.STDOUT,
                               timeout=1800)
            except (subprocess.SubprocessError, OSError) as exc:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                self.litellm_problem = f"install failed ({type(exc).__name__}): {' | '.join(tail)}"
                return None
        return str(exe) if exe.exists() else None

    def litellm_version(self) -> str | None:
        py = self.litellm_venv / "bin" / "python"
        if not py.exists():
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([str(py), "-c", "import importlib.metadata as m;print(m.version('litellm'))"],
                                 capture_output=True, text=True, timeout=60)
            return out.stdout.strip() or None
        return None

    # -- startup ----------------------------------------------------------------------------------

    def start_mock(self, name: str, latency: float, cores: str) -> tuple[Proc, int]:
        port = free_port()
        budget = 4 * 3600 + (self.args.soak or 0)  # a safety net: the mock exits by itself
        proc = Proc(name, [self.python, str(HERE / "mock_upstream.py"), "--port", str(port), "--latency-ms",
                           str(latency), "--chunks", str(self.stream_chunks), "--max-seconds", str(budget)],
                    cores, self.out / "logs" / f"{name}.log").start()
        wait_ready(proc, port, "/health", 20)
        return proc, port

    def write_chorus_config(self, fast: int, slow: int) -> Path:
        path = self.out / "chorus.toml"
        path.write_text(f"""# generated by benchmarks/run.py
[server]
host = "{HOST}"

[[providers]]
id = "fast"
driver = "openai"
base_url = "http://{HOST}:{fast}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o-mini"]

[[providers]]
id = "slow"
driver = "openai"
base_url = "http://{HOST}:{slow}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o-mini"]

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

[[datasets]]
id = "{RAG_DATASET}"
workspace = "bench"
name = "Chorus docs (benchmark snapshot)"
sources = ["{RAG_DOCS}/*.md"]

[[bots]]
id = "{RAG_BOT}"
workspace = "bench"
name = "Ada with the Chorus docs"
model = "fast/gpt-4o-mini"
backstory = {json.dumps(BACKSTORY)}
params = {{ temperature = 0.2, max_tokens = 400 }}
datasets = ["{RAG_DATASET}"]
retrieval = {{ top_k = {RAG_TOP_K} }}
""")
        return path

    def chorus_env(self) -> dict[str, str]:
        """The environment of every ``chorus`` command: this run's data directory, no ambient config."""
        env = dict(os.environ)
        env.pop("CHORUS_CONFIG", None)
        env["CHORUS_DATA_DIR"] = str(self.out / "chorus-data")
        return env

    def ingest_dataset(self, config: Path) -> dict[str, Any]:
        """Snapshot ``docs/*.md`` next to ``config`` and ingest it with ``chorus datasets`` (before serve).

        Ingesting first keeps the server's startup (and its peak RSS) to a no-op re-sync; the file
        and chunk counts come from ``chorus datasets list``.
        """
        docs = self.out / RAG_DOCS
        docs.mkdir(exist_ok=True)
        for md in sorted((REPO / "docs").glob("*.md")):
            shutil.copyfile(md, docs / md.name)
        base = [self.chorus_bin, "datasets"]
        t0 = time.monotonic()
        out = subprocess.run([*base, "ingest", RAG_DATASET, "--config", str(config)], capture_output=True, text=True,
                             env=self.chorus_env(), timeout=300, cwd=str(REPO))
        ingest_s = time.monotonic() - t0
        if out.returncode != 0:
            raise RuntimeError(f"chorus datasets ingest failed: {(out.stdout + out.stderr)[-800:]}")
        out = subprocess.run([*base, "list", "--config", str(config)], capture_output=True, text=True,
                             env=self.chorus_env(), timeout=60, cwd=str(REPO))
        row = next((ln.split() for ln in out.stdout.splitlines() if ln.split()[:1] == [RAG_DATASET]), None)
        if out.returncode != 0 or row is None:
            raise RuntimeError(f"chorus datasets list: no {RAG_DATASET}: {(out.stdout + out.stderr)[-800:]}")
        files, failed, chunks = (int(x) for x in row[-3:])  # ... FILES FAILED CHUNKS
        if not chunks or failed:
            raise RuntimeError(f"dataset {RAG_DATASET}: {chunks} chunks, {failed} files failed")
        return {"bot": RAG_BOT, "dataset": RAG_DATASET, "files": files, "chunks": chunks, "top_k": RAG_TOP_K,
                "ingest_s": ingest_s, "question": RAG_MESSAGES[-1]["content"]}

    def check_retrieval(self, target: Target) -> dict[str, Any]:
        """One request with ``return_citations``: the sources retrieval put into the upstream prompt."""
        body = dict(json.loads(target.body), return_citations=True)
        status, raw = http_request("POST", target.port, "/v1/chat/completions", json.dumps(body).encode(),
                                   {"content-type": "application/json", "authorization": target.auth}, timeout=30)
        results = json.loads(raw).get("search_results") if status == 200 else None
        if not results:
            raise RuntimeError(f"{target.name}: retrieval returned no sources (status {status}): {raw[:300]!r}")
        return {"sources": len(results), "titles": [r.get("title") for r in results]}

    def write_litellm_config(self, fast: int, slow: int) -> Path:
        path = self.out / "litellm.yaml"
        path.write_text(f"""# generated by benchmarks/run.py
model_list:
  - model_name: fast
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://{HOST}:{fast}/v1", api_key: "{UPSTREAM_KEY}"}}
  - model_name: slow
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://{HOST}:{slow}/v1", api_key: "{UPSTREAM_KEY}"}}
litellm_settings:
  telemetry: false
  callbacks: []
  success_callback: []
  failure_callback: []
  num_retries: 0
  drop_params: true
  request_timeout: 600
router_settings:
  num_retries: 0
general_settings:
  master_key: "{API_KEY}"
  disable_spend_logs: true
""")
        return path

    def start_chorus(self, config: Path, workers: int, cores: str | None, name: str) -> tuple[Proc, int]:
        port = free_port()
        env = self.chorus_env()
        argv = [self.chorus_bin, "serve", "--config", str(config), "--host", HOST, "--port", str(port),
                "--workers", str(workers)]
        proc = Proc(name, argv, cores, self.out / "logs" / f"{name}.log", env).start()
        wait_ready(proc, port, "/health", 60)
        return proc, port

    def start_litellm(self, exe: str, config: Path) -> tuple[Proc, int]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL",
                                                                  "OPENAI_API_KEY", "OPENAI_BASE_URL")}
        env.update(LITELLM_OFFLINE_MODE="true", LITELLM_LOCAL_MODEL_COST_MAP="true", LITELLM_TELEMETRY="False",
                   LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", DISABLE_ADMIN_UI="True",
                   NO_DOCS="True", NO_REDOC="True")
        argv = [exe, "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1",
                "--telemetry", "False"]
        proc = Proc("litellm", argv, GATEWAY_CORE, self.out / "logs" / "litellm.log", env).start()
        wait_ready(proc, port, "/health/liveliness", 180)
        return proc, port

    def setup(self) -> None:
        self.log(f"results in {self.out}")
        self.results["machine"] = self.machine()
        self.log(f"machine: {self.results['machine']['cpu']}, {self.results['machine']['cores']} cores, "
                 f"load average {self.results['machine']['loadavg_start']}")
        # upstream mocks (core 0, with the load generator) and the 'direct' mocks (core 1, like a gateway)
        up_fast, self.up_fast = self.start_mock("mock-upstream-0ms", 0, DRIVER_CORE)
        up_slow, self.up_slow = self.start_mock("mock-upstream-50ms", 50, DRIVER_CORE)
        d_fast, p_dfast = self.start_mock("mock-direct-0ms", 0, GATEWAY_CORE)
        d_slow, p_dslow = self.start_mock("mock-direct-50ms", 50, GATEWAY_CORE)
        self.gateways["direct"] = d_fast
        T = self.targets
        T["direct"] = Target("direct", "direct (mock)", p_dfast, "gpt-4o-mini", d_fast, auth=False)
        T["direct@50"] = Target("direct", "direct (mock)", p_dslow, "gpt-4o-mini", d_slow, auth=False)
        T["direct-stream"] = Target("direct", "direct (mock)", p_dfast, "gpt-4o-mini", d_fast, stream=True, auth=False)

        chorus_cfg = self.write_chorus_config(self.up_fast, self.up_slow)
        self.results["retrieval_bot"] = rag = self.ingest_dataset(chorus_cfg)
        self.log(f"dataset {RAG_DATASET}: {rag['files']} docs files, {rag['chunks']} chunks, ingested in {rag['ingest_s']:.1f} s")
        chorus, p_chorus = self.start_chorus(chorus_cfg, 1, GATEWAY_CORE, "chorus")
        self.gateways["chorus"] = chorus
        T["chorus"] = Target("chorus", "Chorus", p_chorus, "model/name=fast/gpt-4o-mini", chorus)
        T["chorus@50"] = Target("chorus", "Chorus", p_chorus, "model/name=slow/gpt-4o-mini", chorus)
        T["chorus-bot"] = Target("chorus-bot", "Chorus bot", p_chorus, "bot/id=ada", chorus)
        T["chorus-rag"] = Target("chorus-rag", "Chorus bot + retrieval", p_chorus, f"bot/id={RAG_BOT}", chorus,
                                 messages=RAG_MESSAGES)
        T["chorus-stream"] = Target("chorus", "Chorus", p_chorus, "model/name=fast/gpt-4o-mini", chorus, stream=True)

        if self.args.no_litellm:
            self.litellm_problem = "skipped (--no-litellm)"
        else:
            exe = self.ensure_litellm()
            if exe:
                try:
                    ll, p_ll = self.start_litellm(exe, self.write_litellm_config(self.up_fast, self.up_slow))
                    self.gateways["litellm"] = ll
                    T["litellm"] = Target("litellm", "LiteLLM", p_ll, "fast", ll)
                    T["litellm@50"] = Target("litellm", "LiteLLM", p_ll, "slow", ll)
                    T["litellm-stream"] = Target("litellm", "LiteLLM", p_ll, "fast", ll, stream=True)
                except RuntimeError as exc:
                    self.litellm_problem = f"did not start offline: {str(exc)[:400]}"
        for key, target in list(T.items()):
            problem = target.check()
            if problem:
                if target.name == "litellm":
                    self.litellm_problem = f"request failed: {problem}"
                    for k in [k for k in T if k.startswith("litellm")]:
                        T.pop(k, None)
                    self.gateways.pop("litellm", None)
                    continue
                raise RuntimeError(f"{key} does not work: {problem}")
        self.results["retrieval_bot"].update(self.check_retrieval(T["chorus-rag"]))
        self.log(f"retrieval bot: {self.results['retrieval_bot']['sources']} sources per request")
        if self.litellm_problem:
            self.log(f"LiteLLM not measured: {self.litellm_problem}")
        self.results["litellm_problem"] = self.litellm_problem
        self.results["machine"]["litellm"] = self.litellm_version()
        time.sleep(1.0)
        self.results["idle_rss_mb"] = {name: p.rss_bytes() / 2**20 for name, p in self.gateways.items()}

    # -- load generators --------------------------------------------------------------------------

    def loadgen(self, mode: str, targets: list[Target], extra: list[str], timeout: float,
                cores: str | None = DRIVER_CORE) -> dict[str, Any]:
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
        body = self.out / f"body-{target.name}-{target.port}.json"
        body.write_text(target.body)
        env = dict(os.environ, BENCH_BODY_FILE=str(body), BENCH_AUTH=target.auth)
        argv = [self.wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s",
                str(HERE / "post.lua"), f"http://{HOST}:{target.port}/v1/chat/completions"]
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

    # -- scenarios --------------------------------------------------------------------------------

    def available(self, *keys: str) -> list[Target]:
        return [self.targets[k] for k in keys if k in self.targets]

    def scenario_latency(self) -> None:
        targets = self.available("direct", "chorus", "chorus-bot", "chorus-rag", "litellm")
        self.log(f"added latency at c=1: {self.lat_rounds} rounds x {self.lat_per_round} requests x {len(targets)} targets")
        cpu0 = {t.name: t.proc.cpu_seconds() for t in targets}
        res = self.loadgen("latency", targets, ["--rounds", str(self.lat_rounds), "--per-round",
                                                str(self.lat_per_round), "--warmup", "100"], timeout=900)
        for t in targets:  # chorus, chorus-bot and chorus-rag share a process: CPU split is not attributable
            res[t.name]["proc_cpu_s"] = t.proc.cpu_seconds() - cpu0[t.name]
        self.results["latency"] = res
        self._save()

    def scenario_ladder(self) -> None:
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        per_target = {0: self.available("direct", "chorus", "litellm"),
                      50: self.available("direct@50", "chorus@50", "litellm@50")}
        bots = len(self.available("chorus-bot", "chorus-rag"))
        total = (sum(len(v) for v in per_target.values()) * len(self.ladder) + bots) * self.repeats
        self.log(f"concurrency ladder {self.ladder} x mocks {self.mock_latencies} ms: {total} runs of "
                 f"{self.rung_seconds:g} s ({'wrk' if self.wrk else 'asyncio loadgen'})")
        for rep in range(self.repeats):
            for latency in self.mock_latencies:
                for c in self.ladder:
                    targets = list(per_target[latency])
                    if latency == 0 and c == 32:
                        targets += self.available("chorus-bot", "chorus-rag")
                    k = (rep + c) % len(targets)  # rotate the order between rungs and repeats
                    for t in targets[k:] + targets[:k]:
                        res = self.closed_run(t, c, self.rung_seconds)
                        rows.setdefault(f"{latency}ms/c{c}", {}).setdefault(t.name, []).append(res)
                self.log(f"  repeat {rep + 1}/{self.repeats}, mock {latency} ms done")
        self.results["ladder"] = rows
        self._save()

    def scenario_stream(self) -> None:
        targets = self.available("direct-stream", "chorus-stream", "litellm-stream")
        self.log(f"streaming TTFT at c=1 ({self.stream_chunks} chunks per stream): {self.stream_rounds} rounds x "
                 f"{self.stream_per_round} streams x {len(targets)} targets")
        self.results["stream_ttft"] = self.loadgen(
            "stream", targets, ["--rounds", str(self.stream_rounds), "--per-round", str(self.stream_per_round),
                                "--warmup", "20"], timeout=900)
        secs = max(2.0, self.rung_seconds)
        self.log(f"streaming relay rate: c={self.stream_conc}, {secs:g} s x {self.repeats} repeats x {len(targets)} targets")
        rate: dict[str, list[dict[str, Any]]] = {}
        for rep in range(self.repeats):
            k = rep % len(targets)
            for t in targets[k:] + targets[:k]:
                rate.setdefault(t.name, []).append(self.closed_run(t, self.stream_conc, secs))
        self.results["stream_rate"] = rate
        self._save()

    def scenario_multiworker(self) -> None:
        if self.args.no_multiworker:
            return
        self.log("multi-worker: chorus --workers 1 and --workers 2, both unpinned (co-located with the mock and "
                 "the load generator)")
        cfg = self.out / "chorus.toml"
        started: list[Proc] = []
        try:
            # The 1-worker reference is a second, unpinned instance: the pinned one of the ladder would
            # compare a gateway with a core of its own against one that shares both cores.
            proc1, port1 = self.start_chorus(cfg, 1, None, "chorus-1w")
            started.append(proc1)
            proc, port = self.start_chorus(cfg, 2, None, "chorus-2w")
            started.append(proc)
        except RuntimeError as exc:
            self.results["multiworker_problem"] = str(exc)[:500]
            for p in started:
                p.stop()
            return
        self.gateways["chorus-1w"] = proc1
        self.gateways["chorus-2w"] = proc
        one = {0: Target("chorus", "Chorus, 1 worker", port1, "model/name=fast/gpt-4o-mini", proc1),
               50: Target("chorus", "Chorus, 1 worker", port1, "model/name=slow/gpt-4o-mini", proc1)}
        two = {0: Target("chorus-2w", "Chorus, 2 workers", port, "model/name=fast/gpt-4o-mini", proc),
               50: Target("chorus-2w", "Chorus, 2 workers", port, "model/name=slow/gpt-4o-mini", proc)}
        problem = two[0].check() or one[0].check()
        if problem:
            self.results["multiworker_problem"] = problem
            for p in started:
                p.stop()
            self.gateways.pop("chorus-1w", None)
            self.gateways.pop("chorus-2w", None)
            return
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        reps = max(1, self.repeats - 1) if self.quick else self.repeats
        for rep in range(reps):
            for latency in (0, 50):
                for c in (32, 128):
                    pair = [one[latency], two[latency]]
                    if rep % 2:
                        pair.reverse()
                    for t in pair:  # unpinned load generator: both cores are shared by everything
                        rows.setdefault(f"{latency}ms/c{c}", {}).setdefault(t.name, []).append(
                            self.closed_run(t, c, self.rung_seconds, cores=None))
        self.results["multiworker"] = rows
        self.results["multiworker_peak_rss_mb"] = proc.peak_rss_bytes() / 2**20
        self.results["multiworker_rss_by_process_mb"] = {str(pid): status_kb(pid, "VmHWM") / 1024 for pid in proc.tree()}
        for p in started:
            p.stop()
        self.gateways.pop("chorus-1w", None)
        self.gateways.pop("chorus-2w", None)
        self._save()

    def scenario_ceiling(self) -> None:
        """Upper bounds on this stack (``benchmarks/ceiling_app.py``), interleaved with direct and Chorus.

        Each reference app runs under the same uvicorn (httptools, uvloop), one worker, pinned to the
        gateway core, and does strictly less than Chorus: ``static`` answers from memory (the server
        stack alone); ``http1`` relays the body to the 0 ms mock with the driver's client
        (:class:`chorus.http1.HTTPPool`, same base URL, headers and pool size) and relays the answer
        back (a bare proxy: no auth, no JSON, no pipeline). If aiohttp is importable by the server
        Python, the same relay on aiohttp (the driver's former client) is measured as an extra row.
        """
        if self.args.no_ceiling:
            return
        modes = ["static", "http1"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([self.python, "-c", "import aiohttp"], capture_output=True, timeout=30, check=False).returncode == 0:
                modes.append("aiohttp")
        self.log("ceilings: uvicorn + a fixed answer, uvicorn + a chorus.http1 relay"
                 f"{' (and an aiohttp relay)' if 'aiohttp' in modes else ''} (benchmarks/ceiling_app.py)")
        started: list[Proc] = []
        targets: list[Target] = []
        try:
            for mode in modes:
                port = free_port()
                env = dict(os.environ, CEILING_MODE=mode, CEILING_UPSTREAM=f"http://{HOST}:{self.up_fast}/v1",
                           CEILING_API_KEY=UPSTREAM_KEY)
                argv = [self.python, "-m", "uvicorn", "ceiling_app:app", "--app-dir", str(HERE), "--host", HOST,
                        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                        "--log-level", "warning", "--lifespan", "on"]
                proc = Proc(f"ceiling-{mode}", argv, GATEWAY_CORE, self.out / "logs" / f"ceiling-{mode}.log", env).start()
                started.append(proc)
                wait_ready(proc, port, "/health", 30)
                target = Target(f"ceiling-{mode}", f"uvicorn + {mode}", port, "gpt-4o-mini", proc, auth=False)
                problem = target.check()
                if problem:
                    raise RuntimeError(f"ceiling-{mode}: {problem}")
                targets.append(target)
        except RuntimeError as exc:
            self.results["ceiling_problem"] = str(exc)[:500]
            for p in started:
                p.stop()
            return
        targets += self.available("direct", "chorus")
        rows: dict[str, list[dict[str, Any]]] = {}
        for rep in range(self.repeats):
            k = rep % len(targets)
            for t in targets[k:] + targets[:k]:
                rows.setdefault(t.name, []).append(self.closed_run(t, 32, self.rung_seconds))
        self.results["ceiling"] = rows
        for p in started:
            p.stop()
        self._save()

    def scenario_soak(self) -> None:
        seconds = self.args.soak
        if not seconds:
            return
        t_plain, t_stream = self.targets["chorus"], self.targets["chorus-stream"]
        proc = t_plain.proc
        self.log(f"soak: {seconds:g} s of steady load on Chorus (wrk c=16 plain + 4 streaming clients)")
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.wait(5.0):
                samples.append((time.monotonic() - t0, proc.rss_bytes() / 2**20))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results: dict[str, Any] = {}

        def streams() -> None:
            results["stream"] = self.closed_run(t_stream, 4, seconds)

        streamer = threading.Thread(target=streams, daemon=True)
        streamer.start()
        try:
            results["plain"] = self.closed_run(t_plain, 16, seconds)
        finally:
            streamer.join(seconds + 120)
            stop.set()
            sampler.join(10)
        after = [s for s in samples if s[0] >= 10.0] or samples
        self.results["soak"] = {
            "seconds": seconds,
            "rss_start_mb": after[0][1] if after else None,
            "rss_end_mb": after[-1][1] if after else None,
            "rss_max_mb": max(s[1] for s in samples) if samples else None,
            "samples": samples,
            **results,
        }
        self._save()

    def scenario_profile(self) -> None:
        if not self.args.profile:
            return
        spy = shutil.which("py-spy") or str(Path(self.python).parent / "py-spy")
        if not Path(spy).exists():
            self.results["profile_problem"] = "py-spy not installed (pip install py-spy into the chorus venv)"
            self.log(self.results["profile_problem"])
            return
        target = self.targets["chorus"]
        seconds = max(5.0, self.args.profile_seconds)
        out: dict[str, Any] = {}
        for fmt, name in (("raw", "profile.txt"), ("flamegraph", "profile.svg")):
            conc = self.args.profile_concurrency
            self.log(f"py-spy record ({fmt}) of Chorus for {seconds:g} s under wrk c={conc}, 0 ms mock")
            dest = self.out / name
            argv = [spy, "record", "--pid", str(target.proc.pid), "--rate", "200", "--duration", str(int(seconds)),
                    "--format", fmt, "-o", str(dest)]
            argv.append("--gil")  # only stacks holding the GIL: CPU time, not the loop waiting in epoll or idle threads
            spy_proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(1.0)
            load = self.closed_run(target, conc, seconds - 1.0)
            try:
                spy_out = spy_proc.communicate(timeout=seconds + 60)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_out = "timeout"
            if fmt == "raw":
                out["load"] = load
                if dest.exists():
                    out["analysis"] = analyse_collapsed(dest.read_text())
                else:
                    out["error"] = spy_out[-600:]
            else:
                out["svg"] = str(dest) if dest.exists() else None
        out["concurrency"] = self.args.profile_concurrency
        self.results["profile"] = out
        self._save()

    # -- orchestration ----------------------------------------------------------------------------

    def _save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))

    def run(self) -> None:
        self.results["settings"] = {
            "quick": self.quick, "rung_seconds": self.rung_seconds, "repeats": self.repeats,
            "lat_rounds": self.lat_rounds, "lat_per_round": self.lat_per_round, "stream_rounds": self.stream_rounds,
            "stream_per_round": self.stream_per_round, "stream_chunks": self.stream_chunks,
            "stream_concurrency": self.stream_conc, "ladder": self.ladder, "mock_latencies": self.mock_latencies,
            "load_generator": "wrk" if self.wrk else "asyncio loadgen", "gateway_core": GATEWAY_CORE,
            "driver_core": DRIVER_CORE,
        }
        t0 = time.monotonic()
        stat0 = cpu_times()
        self.setup()
        only = set(self.args.only.split(",")) if self.args.only else None
        want = (lambda name: only is None or name in only)
        if want("latency"):
            self.scenario_latency()
        if want("ladder"):
            self.scenario_ladder()
        if want("stream"):
            self.scenario_stream()
        self.results["peak_rss_mb"] = {name: p.peak_rss_bytes() / 2**20 for name, p in self.gateways.items()}
        if want("ceiling"):
            self.scenario_ceiling()
        if want("multiworker"):
            self.scenario_multiworker()
        if want("soak"):
            self.scenario_soak()
        if want("profile"):
            self.scenario_profile()
        self.results["machine"]["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        stat1 = cpu_times()
        if len(stat0) > 7 and len(stat1) > 7:
            total = sum(stat1[:8]) - sum(stat0[:8])
            self.results["machine"]["steal_pct"] = 100.0 * (stat1[7] - stat0[7]) / total if total else None
        self.results["elapsed_s"] = time.monotonic() - t0
        self._save()
        md = render(self.results)
        (self.out / "summary.md").write_text(md)
        if not self.args.no_doc and not self.args.only:  # a partial run never replaces the full table
            write_doc(md, Path(self.args.doc))
            self.log(f"wrote the results section of {self.args.doc}")
        print(md)
        self.log(f"done in {self.results['elapsed_s']:.0f} s; raw results in {self.out}")


# ------------------------------------------------------------------------------------------------
# profile analysis


IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "wait (threading.py", "get (queue.py", "select (selectors.py")


def analyse_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function and per package from py-spy ``--format raw``.

    Stacks whose leaf is an idle wait in a helper thread (a thread-pool worker blocked on its queue,
    which py-spy can misreport as active) are left out and counted in ``idle_samples``.
    """
    total = 0
    idle = 0
    self_fn: dict[str, int] = {}
    incl_fn: dict[str, int] = {}
    incl_pkg: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            idle += n
            total -= n
            continue
        self_fn[frames[-1]] = self_fn.get(frames[-1], 0) + n
        seen_fn, seen_pkg = set(), set()
        for frame in frames:
            if frame not in seen_fn:
                seen_fn.add(frame)
                incl_fn[frame] = incl_fn.get(frame, 0) + n
            pkg = package_of(frame)
            if pkg not in seen_pkg:
                seen_pkg.add(pkg)
                incl_pkg[pkg] = incl_pkg.get(pkg, 0) + n
    # self time per package (the leaf frame's package)
    self_pkg: dict[str, int] = {}
    for frame, n in self_fn.items():
        pkg = package_of(frame)
        self_pkg[pkg] = self_pkg.get(pkg, 0) + n

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    layers: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        name = layer_of(frames)
        layers[name] = layers.get(name, 0) + int(count)
    return {"samples": total, "idle_samples": idle, "self_by_package": share(self_pkg), "inclusive_by_package": share(incl_pkg),
            "self_by_function": share(self_fn), "inclusive_by_function": share(incl_fn),
            "layers": [(k, round(100.0 * v / total, 1)) for k, v in sorted(layers.items(), key=lambda kv: -kv[1])]}


# Where a sample's time goes: the leaf-most frame that matches a rule decides (first rule wins).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # chorus/http1.py comes first and, being leaf-most, wins over the driver/pipeline/handler frames above it;
    # matched without the "(" so a full path (…/core/chorus/http1.py:123) counts too. aiohttp: older runs.
    ("upstream HTTP client (chorus.http1: request, pool, response parsing, its socket I/O)",
     ("chorus/http1.py:", "(aiohttp/", "(yarl/", "(multidict/")),
    ("socket writes to the client (uvicorn `send`: response head and body)", ("RequestResponseCycle.send ",)),
    ("request parsing and task start (uvicorn + httptools)", ("HttpToolsProtocol.", "RequestResponseCycle.receive ")),
    ("provider driver (encode the upstream body, decode the answer or each SSE event)", ("openai_provider.py", "(chorus/sse.py")),
    ("hooks: pluggy/HookRunner calls, plugin code, tasks for async hooks", ("HookRunner.", "(pluggy/", "(chorus_plugins/", "Pipeline._gather", "Pipeline._post_process")),
    ("pipeline (resolve, layering, agent loop, chunk rewrite, encode for the client)", ("Pipeline.", "(chorus/pipeline.py", "(chorus/layering.py", "(chorus/turns.py", "(chorus/legacy.py")),
    ("request handler (auth, body, decode, context, request id, disconnect watch, relay)",
     ("(chorus/api/", "(chorus/requestid.py", "(chorus/context.py", "(chorus/schemas.py", "(chorus/keys.py",
      "(chorus/registry.py", "(chorus/targets.py")),
    ("Litestar (routing, exception middleware, before_send wrapper)", ("(litestar/",)),
    ("uvicorn ASGI glue (proxy headers, run_asgi)", ("RequestResponseCycle.run_asgi ", "ProxyHeadersMiddleware.")),
)


def layer_of(frames: list[str]) -> str:
    """The layer of one sampled stack (``LAYERS``); the event loop itself when nothing matches."""
    for frame in reversed(frames):
        for name, needles in LAYERS:
            if any(n in frame for n in needles):
                return name
    return "event loop and task switching (uvloop, asyncio)"


PACKAGES = ("aiohttp", "yarl", "multidict", "propcache", "httpx", "httpcore", "h11", "anyio", "litestar", "uvicorn", "httptools", "msgspec", "pluggy", "chorus_plugins",
            "chorus", "asyncio", "uvloop", "logging", "json", "ssl", "secrets", "typing", "multidict", "contextlib",
            "email", "urllib", "http", "selectors", "socket", "concurrent", "threading", "idna", "certifi")


def package_of(frame: str) -> str:
    """The package of a py-spy frame like ``send (httpx/_client.py:1629)``."""
    m = re.search(r"\(([^()]*?):\d+\)$", frame)
    path = m.group(1) if m else frame
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        rest = path.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    for marker in ("core/chorus/", "plugins/chorus_plugins/"):
        if marker in path:
            return marker.split("/")[1]
    parts = path.split("/")
    for pkg in PACKAGES:
        if pkg in parts or f"{pkg}.py" in parts:
            return pkg
    return parts[-1].removesuffix(".py") if parts else "?"


# ------------------------------------------------------------------------------------------------
# reporting


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
    return statistics.median(values) if values else None


def fmt_ms(us: float | None, digits: int = 2) -> str:
    return "–" if us is None or us != us else f"{us / 1000:.{digits}f}"


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    s = r["settings"]
    lines: list[str] = []
    mode = "quick development run (`--quick`)" if s["quick"] else "full run"
    lines.append(f"### Results: {mode}, {m['date']}")
    lines.append("")
    stack = m.get("stack", {})
    lines.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}. Python {m.get('server_python') or m['python']}; "
        f"chorus {m.get('chorus', '?')} (litestar {stack.get('litestar', '?')}, msgspec {stack.get('msgspec', '?')}, "
        f"chorus.http1 (httptools {stack.get('httptools', '?')}) upstream client, uvicorn {stack.get('uvicorn', '?')} with httptools "
        f"{stack.get('httptools', '?')} and uvloop {stack.get('uvloop', '?')}, pluggy {stack.get('pluggy', '?')}); "
        f"LiteLLM {m.get('litellm') or 'not measured'}; load generator {s['load_generator']}"
        f"{' ' + m['wrk'] if m.get('wrk') and s['load_generator'] == 'wrk' else ''} + asyncio client. "
        f"Load average {m.get('loadavg_start', 0):.2f} at start, {m.get('loadavg_end') or 0:.2f} at end "
        f"(other work on the machine shows up here); CPU steal {m.get('steal_pct') or 0:.1f} %. Run took {r.get('elapsed_s', 0) / 60:.1f} min."
    )
    if m.get("plugins"):
        lines.append("")
        lines.append("Installed plugins (`chorus plugins`): " + ", ".join(f"`{p}`" for p in m["plugins"]) + ".")
    lines.append("")
    lines.append(
        f"Settings: ladder rungs {s['rung_seconds']:g} s, medians of {s['repeats']} repeats; c=1 latency "
        f"{s['lat_rounds']} interleaved rounds × {s['lat_per_round']} requests per target; streams of "
        f"{s['stream_chunks']} content chunks, TTFT from {s['stream_rounds']} × {s['stream_per_round']} streams per target, "
        f"relay rate at c={s['stream_concurrency']}. Gateways pinned to core {s['gateway_core']}, upstream mock and load "
        f"generator to core {s['driver_core']}."
    )
    if r.get("litellm_problem"):
        lines += ["", f"LiteLLM was not measured: {r['litellm_problem']}"]
    lines.append("")

    lat = r.get("latency", {})
    ladder = r.get("ladder", {})
    stream = r.get("stream_ttft", {})
    rate = r.get("stream_rate", {})
    direct_lat = lat.get("direct", {})

    def peak(name: str, latency: int = 0) -> tuple[float | None, str]:
        best, where = None, ""
        for key, per in ladder.items():
            if not key.startswith(f"{latency}ms/"):
                continue
            v = med(per.get(name, []), "rps")
            if v is not None and (best is None or v > best):
                best, where = v, key.split("/")[1]
        return best, where

    # targets
    ch = lat.get("chorus", {})
    add50 = ch.get("p50_us", 0) - direct_lat.get("p50_us", 0) if ch and direct_lat else None
    add99 = ch.get("p99_us", 0) - direct_lat.get("p99_us", 0) if ch and direct_lat else None
    peak_direct, c_direct = peak("direct")
    peak_chorus, c_chorus = peak("chorus")
    peak_ll, c_ll = peak("litellm")
    st_ch, st_d = stream.get("chorus", {}), stream.get("direct", {})
    add_ttft = st_ch.get("ttft_p50_us", 0) - st_d.get("ttft_p50_us", 0) if st_ch and st_d else None
    relay = med(rate.get("chorus", []), "events_per_s")
    peak_rss = r.get("peak_rss_mb", {}).get("chorus")
    best_gw = max([v for v in (peak_chorus, peak_ll) if v] or [0])
    lines.append("#### Targets (issue #5)")
    lines.append("")
    lines.append("| target | goal | measured | |")
    lines.append("| --- | --- | --- | --- |")
    lines.append(f"| added latency p50, c=1 | < 1 ms | {fmt_ms(add50, 3)} ms | {verdict(None if add50 is None else add50 < 1000)} |")
    lines.append(f"| added latency p99, c=1 | < 3 ms | {fmt_ms(add99, 3)} ms | {verdict(None if add99 is None else add99 < 3000)} |")
    lines.append(f"| peak throughput vs LiteLLM (0 ms mock) | ≥ 10× | {ratio(peak_chorus, peak_ll)} ({fmt_num(peak_chorus)} vs "
                 f"{fmt_num(peak_ll)} req/s) | {verdict(None if not (peak_chorus and peak_ll) else peak_chorus >= 10 * peak_ll)} |")
    lines.append(f"| peak throughput vs the mock's direct rate | ≥ 0.25× | {ratio(peak_chorus, peak_direct)} "
                 f"({fmt_num(peak_chorus)} vs {fmt_num(peak_direct)} req/s) | "
                 f"{verdict(None if not (peak_chorus and peak_direct) else peak_chorus >= 0.25 * peak_direct)} |")
    lines.append(f"| added TTFT p50, c=1 | < 2 ms | {fmt_ms(add_ttft, 3)} ms | {verdict(None if add_ttft is None else add_ttft < 2000)} |")
    lines.append(f"| streaming relay, c={s['stream_concurrency']} | ≥ 20,000 chunks/s | {fmt_num(relay)} chunks/s | "
                 f"{verdict(None if relay is None else relay >= 20000)} |")
    lines.append(f"| peak RSS, one worker | < 150 MB | {fmt_num(peak_rss, 1)} MB | {verdict(None if peak_rss is None else peak_rss < 150)} |")
    lines.append(f"| mock not the bottleneck | ≥ 5× best gateway | {ratio(peak_direct, best_gw)} | "
                 f"{verdict(None if not (peak_direct and best_gw) else peak_direct >= 5 * best_gw)} |")
    lines.append("")

    # latency
    if lat:
        lines.append("#### Added latency at concurrency 1 (0 ms mock, interleaved rounds)")
        lines.append("")
        lines.append("| target | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | errors |")
        lines.append("| --- | --: | --: | --: | --: | --: | --: |")
        for name, label in (("direct", "direct (mock)"), ("chorus", "Chorus, `model/name=`"),
                            ("chorus-bot", "Chorus, `bot/id=` with backstory"),
                            ("chorus-rag", "Chorus, `bot/id=` with backstory + retrieval"), ("litellm", "LiteLLM")):
            row = lat.get(name)
            if not row:
                continue
            a50 = row["p50_us"] - direct_lat["p50_us"] if name != "direct" else None
            a99 = row["p99_us"] - direct_lat["p99_us"] if name != "direct" else None
            lines.append(f"| {label} | {fmt_ms(row['p50_us'], 3)} | {fmt_ms(row['p90_us'], 3)} | {fmt_ms(row['p99_us'], 3)} | "
                         f"{fmt_ms(a50, 3)} | {fmt_ms(a99, 3)} | {row['errors']} |")
        lines.append("")

    # ladder
    if ladder:
        has_ll = any("litellm" in per for per in ladder.values())
        lines.append("#### Concurrency ladder (closed loop, req/s and latency in ms; medians)")
        lines.append("")
        head = "| mock | c | direct req/s | Chorus req/s | Chorus p50 / p99 |"
        sep = "| --- | --: | --: | --: | --: |"
        if has_ll:
            head += " LiteLLM req/s | LiteLLM p50 / p99 |"
            sep += " --: | --: |"
        head += " Chorus/direct |" + (" Chorus/LiteLLM |" if has_ll else "") + " errors D/C" + ("/L" if has_ll else "") + " |"
        sep += " --: |" + (" --: |" if has_ll else "") + " --: |"
        lines += [head, sep]
        for key in sorted(ladder, key=lambda k: (int(k.split("ms/")[0]), int(k.split("/c")[1]))):
            per = ladder[key]
            mock, c = key.split("/")
            d, chs, ll = per.get("direct", []), per.get("chorus", []), per.get("litellm", [])
            row = (f"| {mock} | {c[1:]} | {fmt_num(med(d, 'rps'))} | {fmt_num(med(chs, 'rps'))} | "
                   f"{fmt_ms(med(chs, 'p50_us'))} / {fmt_ms(med(chs, 'p99_us'))} |")
            if has_ll:
                row += f" {fmt_num(med(ll, 'rps'))} | {fmt_ms(med(ll, 'p50_us'))} / {fmt_ms(med(ll, 'p99_us'))} |"
            row += f" {ratio(med(chs, 'rps'), med(d, 'rps'))} |"
            if has_ll:
                row += f" {ratio(med(chs, 'rps'), med(ll, 'rps'))} |"
            errs = [sum(x.get('errors', 0) for x in rows_) for rows_ in ((d, chs, ll) if has_ll else (d, chs))]
            row += " " + "/".join(str(e) for e in errs) + " |"
            lines.append(row)
        lines.append("")
        c32 = ladder.get("0ms/c32", {})
        rag = r.get("retrieval_bot") or {}
        rag_label = (f"`bot/id={rag.get('bot', RAG_BOT)}`: same backstory + retrieval over {rag.get('chunks', '?')} chunks "
                     f"of the project docs (top_k {rag.get('top_k', '?')}, {rag.get('sources', '?')} sources layered), "
                     f"a docs question")
        lines.append("#### Bot request (`bot/id=` with a 480-character backstory and default params, without and with "
                     "retrieval) vs plain model")
        lines.append("")
        lines.append("| | c=1 p50 ms | c=1 p99 ms | c=32 req/s (0 ms mock) | CPU µs/request at c=32 |")
        lines.append("| --- | --: | --: | --: | --: |")
        for label, name in (("`model/name=fast/gpt-4o-mini`", "chorus"), ("`bot/id=ada`", "chorus-bot"),
                            (rag_label, "chorus-rag")):
            rows_ = c32.get(name)
            l1 = lat.get(name, {})
            if not rows_ and not l1:
                continue
            lines.append(f"| {label} | {fmt_ms(l1.get('p50_us'), 3)} | {fmt_ms(l1.get('p99_us'), 3)} | "
                         f"{fmt_num(med(rows_ or [], 'rps'))} | {fmt_num(med(rows_ or [], 'cpu_us_per_req'))} |")
        if rag and (c32.get("chorus-rag") or lat.get("chorus-rag")):
            lines.append("")
            lines.append(f"The retrieval bot is asked “{rag.get('question')}” (the others the order question); its "
                         f"dataset is a snapshot of `docs/*.md` ({rag.get('files')} files) in the SQLite FTS5 store, "
                         f"ingested before the server starts, so every request runs a BM25 search and layers the "
                         f"numbered sources into the system prompt before the upstream call.")
        lines.append("")

    # streaming
    if stream:
        lines.append(f"#### Streaming ({s['stream_chunks']} content chunks per response, 0 ms mock)")
        lines.append("")
        lines.append(f"| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | events per stream | relay chunks/s at c={s['stream_concurrency']} "
                     f"| CPU µs per chunk |")
        lines.append("| --- | --: | --: | --: | --: | --: | --: |")
        for name, label in (("direct", "direct (mock)"), ("chorus", "Chorus"), ("litellm", "LiteLLM")):
            row = stream.get(name)
            if not row:
                continue
            a = row["ttft_p50_us"] - st_d["ttft_p50_us"] if name != "direct" and st_d else None
            rr = rate.get(name, [])
            lines.append(f"| {label} | {fmt_ms(row['ttft_p50_us'], 3)} | {fmt_ms(row['ttft_p99_us'], 3)} | {fmt_ms(a, 3)} | "
                         f"{row.get('events_per_stream', 0):.0f} | {fmt_num(med(rr, 'events_per_s'))} | "
                         f"{fmt_num(med(rr, 'cpu_us_per_event'), 1) if name != 'direct' else '–'} |")
        lines.append("")

    # efficiency
    lines.append("#### Efficiency (gateway process tree)")
    lines.append("")
    lines.append("| target | CPU µs/request, c=1, 0 ms | c=32, 0 ms | c=128, 0 ms | c=8, 50 ms | idle RSS MB | peak RSS MB |")
    lines.append("| --- | --: | --: | --: | --: | --: | --: |")
    for name, label in (("chorus", "Chorus (1 worker)"), ("litellm", "LiteLLM (1 worker)"), ("direct", "mock (direct)")):
        if name not in r.get("peak_rss_mb", {}):
            continue
        c1 = med(ladder.get("0ms/c1", {}).get(name, []), "cpu_us_per_req")
        c32 = med(ladder.get("0ms/c32", {}).get(name, []), "cpu_us_per_req")
        c128 = med(ladder.get("0ms/c128", {}).get(name, []), "cpu_us_per_req")
        c8 = med(ladder.get("50ms/c8", {}).get(name, []), "cpu_us_per_req")
        lines.append(f"| {label} | {fmt_num(c1)} | {fmt_num(c32)} | {fmt_num(c128)} | {fmt_num(c8)} | {fmt_num(r.get('idle_rss_mb', {}).get(name), 1)} | "
                     f"{fmt_num(r['peak_rss_mb'][name], 1)} |")
    lines.append("")

    ceil = r.get("ceiling")
    if ceil:
        lines.append("#### What this stack allows (c=32, 0 ms mock, one pinned worker each; `benchmarks/ceiling_app.py`)")
        lines.append("")
        lines.append("| target | does | req/s | p99 ms | CPU µs/request | of direct | Chorus of it |")
        lines.append("| --- | --- | --: | --: | --: | --: | --: |")
        d_rps = med(ceil.get("direct", []), "rps")
        c_rps = med(ceil.get("chorus", []), "rps")
        for name, label, does in (
            ("direct", "direct (mock)", "raw asyncio, pre-built bytes"),
            ("ceiling-static", "uvicorn, fixed answer", "the server stack alone: parse, ASGI, respond"),
            ("ceiling-http1", "uvicorn + chorus.http1 relay",
             "a bare proxy: the same two hops and client as Chorus, no auth/JSON/pipeline"),
            ("ceiling-aiohttp", f"uvicorn + aiohttp {stack.get('aiohttp', '').strip(' -')} relay".replace("  ", " "),
             "the same bare proxy on aiohttp (not a Chorus dependency; measured when installed)"),
            ("chorus", "Chorus", "auth, decode, pipeline and hooks, upstream call, encode"),
        ):
            rows_ = ceil.get(name, [])
            if not rows_:
                continue
            rps = med(rows_, "rps")
            lines.append(f"| {label} | {does} | {fmt_num(rps)} | {fmt_ms(med(rows_, 'p99_us'))} | "
                         f"{fmt_num(med(rows_, 'cpu_us_per_req'))} | {ratio(rps, d_rps)} | "
                         f"{ratio(c_rps, rps) if name != 'chorus' else '–'} |")
        lines.append("")
    elif r.get("ceiling_problem"):
        lines += [f"Reference apps not measured: {r['ceiling_problem']}", ""]

    mw = r.get("multiworker")
    if mw:
        lines.append("#### Multi-worker (`--workers 1` vs `--workers 2`, both unpinned: the gateway workers share both cores "
                     "with the load generator; the upstream mock stays on core 0)")
        lines.append("")
        lines.append("| mock | c | 1 worker req/s | 1 worker p99 ms | 2 workers req/s | 2 workers p99 ms | 2w/1w |")
        lines.append("| --- | --: | --: | --: | --: | --: | --: |")
        for key in sorted(mw, key=lambda k: (int(k.split("ms/")[0]), int(k.split("/c")[1]))):
            one, two = mw[key].get("chorus", []), mw[key].get("chorus-2w", [])
            mock, c = key.split("/")
            lines.append(f"| {mock} | {c[1:]} | {fmt_num(med(one, 'rps'))} | {fmt_ms(med(one, 'p99_us'))} | "
                         f"{fmt_num(med(two, 'rps'))} | {fmt_ms(med(two, 'p99_us'))} | {ratio(med(two, 'rps'), med(one, 'rps'))} |")
        lines.append(f"\nPeak RSS of the 2-worker tree (supervisor + workers): {fmt_num(r.get('multiworker_peak_rss_mb'), 1)} MB.")
        lines.append("")
    elif r.get("multiworker_problem"):
        lines += [f"Multi-worker run failed: {r['multiworker_problem']}", ""]

    soak = r.get("soak")
    if soak:
        lines.append(f"#### Soak ({soak['seconds']:g} s, wrk c=16 plain + 4 streaming clients on Chorus)")
        lines.append("")
        p, st = soak.get("plain", {}), soak.get("stream", {})
        lines.append(f"RSS {fmt_num(soak.get('rss_start_mb'), 1)} MB after 10 s, {fmt_num(soak.get('rss_end_mb'), 1)} MB at the end "
                     f"(max {fmt_num(soak.get('rss_max_mb'), 1)} MB); {fmt_num(p.get('requests'))} plain requests at "
                     f"{fmt_num(p.get('rps'))} req/s, {fmt_num(st.get('requests'))} streams; errors {p.get('errors', 0)} + "
                     f"{st.get('errors', 0)}.")
        lines.append("")

    prof = r.get("profile")
    if prof and prof.get("analysis"):
        a = prof["analysis"]
        lines.append(f"#### py-spy profile of Chorus (wrk c={prof.get('concurrency', 32)}, 0 ms mock, {a['samples']} samples holding "
                     f"the GIL, i.e. CPU time of the worker; flame graph: `profile.svg` in the results directory)")
        lines.append("")
        if a.get("layers"):
            lines.append("| where the time goes | share of samples % |")
            lines.append("| --- | --: |")
            for name, pct in a["layers"]:
                lines.append(f"| {name} | {pct} |")
            lines.append("")
        lines.append("| package | self % | inclusive % |")
        lines.append("| --- | --: | --: |")
        incl = dict(a["inclusive_by_package"])
        for pkg, pct in a["self_by_package"][:12]:
            lines.append(f"| {pkg} | {pct} | {incl.get(pkg, '–')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_doc(md: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n{md}{END_MARK}"
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    path.write_text(text)


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rungs and fewer repeats (~4 minutes)")
    parser.add_argument("--duration", type=float, help="seconds per ladder rung (default 8, quick 2)")
    parser.add_argument("--repeats", type=int, help="repeats per rung, reported as medians (default 3, quick 2)")
    parser.add_argument("--chunks", type=int, default=64, help="content chunks per streamed response")
    parser.add_argument("--soak", type=float, nargs="?", const=300.0, default=0.0,
                        help="also run a soak of this many seconds (default when given: 300)")
    parser.add_argument("--profile", action="store_true", help="also profile Chorus with py-spy under load")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument("--profile-concurrency", type=int, default=32)
    parser.add_argument("--no-litellm", action="store_true", help="do not measure LiteLLM")
    parser.add_argument("--no-litellm-install", action="store_true", help="do not create benchmarks/.venv-litellm")
    parser.add_argument("--no-multiworker", action="store_true", help="skip the --workers 2 run")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the reference apps (benchmarks/ceiling_app.py)")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio load generator for the ladder too")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--only", help="comma-separated scenarios to run (latency, ladder, stream, ceiling, multiworker, "
                                       "soak, profile); implies --no-doc")
    parser.add_argument("--doc", default=str(DOC), help="markdown file whose results section is replaced")
    parser.add_argument("--python", help="interpreter for the mock and the asyncio client (default: .venv's)")
    parser.add_argument("--chorus-bin", help="the chorus executable (default: .venv/bin/chorus)")
    parser.add_argument("--litellm-venv", help="LiteLLM's virtual environment (default: benchmarks/.venv-litellm)")
    parser.add_argument("--results-dir", help="where raw results go (default: benchmarks/results/<stamp>)")
    args = parser.parse_args(argv)

    atexit.register(stop_all)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    def on_int(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, on_int)  # also when started in the background, where SIGINT is ignored
    bench = Bench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
