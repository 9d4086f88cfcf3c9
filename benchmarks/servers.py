"""The servers under test and around them: the machine and software facts, LiteLLM's own venv,
the generated ``chorus.toml`` and ``litellm.yaml``, the docs dataset of the retrieval bot, and
starting the mocks, Chorus and LiteLLM (each pinned, logged, waited for)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from constants import (
    API_KEY,
    BACKSTORY,
    GATEWAY_CORE,
    HERE,
    HOST,
    LITELLM_VERSION,
    RAG_BOT,
    RAG_DATASET,
    RAG_DOCS,
    RAG_MESSAGES,
    RAG_TOP_K,
    REPO,
    UPSTREAM_KEY,
)
from harness import Bench, Target
from procs import Proc, free_port, http_request, wait_ready


def machine(bench: Bench) -> dict[str, Any]:
    """The CPU, kernel, Pythons, chorus and stack versions, plugins and wrk version of this run."""
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
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
            [bench.python, "-c", "import platform;print(platform.python_version())"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["chorus"] = subprocess.run([bench.chorus_bin, "--version"], capture_output=True, text=True,
                                        timeout=30).stdout.strip().replace("chorus ", "")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        code = ("import importlib.metadata as m\n"
                "for d in ('litestar','msgspec','aiohttp','httpx','uvicorn','uvloop','httptools','pluggy'):\n"
                "  try: print(d, m.version(d))\n  except Exception: print(d, '-')")
        out = subprocess.run([bench.python, "-c", code], capture_output=True, text=True, timeout=30).stdout
        info["stack"] = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        plugins = subprocess.run([bench.chorus_bin, "plugins", "--json"], capture_output=True, text=True, timeout=60)
        listed = json.loads(plugins.stdout)
        info["plugins"] = sorted({f"{p['group'].removeprefix('chorus.')}:{p['name']} ({p['distribution']})"
                                  for p in listed.get("plugins", [])})
        info["plugin_failures"] = [f"{f['group']}:{f['name']}: {f['error']}" for f in listed.get("failures", [])]
    if bench.wrk:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([bench.wrk, "-v"], capture_output=True, text=True, timeout=10)
            m = re.search(r"wrk (\S+)", version.stdout + version.stderr)
            info["wrk"] = m.group(1) if m else "?"
    return info


def ensure_litellm(bench: Bench) -> str | None:
    """The ``litellm`` executable, installing it into its own venv if needed; None if unavailable."""
    exe = bench.litellm_venv / "bin" / "litellm"
    if exe.exists():
        return str(exe)
    if bench.args.no_litellm_install:
        bench.litellm_problem = f"not installed ({exe} missing; --no-litellm-install given)"
        return None
    bench.log(f"installing litellm[proxy]=={LITELLM_VERSION} into {bench.litellm_venv} (one time, a few minutes)")
    log = bench.out / "logs" / "litellm-install.log"
    with open(log, "wb") as f:
        try:
            subprocess.run([sys.executable, "-m", "venv", str(bench.litellm_venv)], check=True, stdout=f,
                           stderr=subprocess.STDOUT, timeout=300)
            subprocess.run([str(bench.litellm_venv / "bin" / "pip"), "install", "-q",
                            f"litellm[proxy]=={LITELLM_VERSION}"], check=True, stdout=f, stderr=subprocess.STDOUT,
                           timeout=1800)
        except (subprocess.SubprocessError, OSError) as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            bench.litellm_problem = f"install failed ({type(exc).__name__}): {' | '.join(tail)}"
            return None
    return str(exe) if exe.exists() else None


def litellm_version(bench: Bench) -> str | None:
    """The litellm version installed in its venv, or None."""
    py = bench.litellm_venv / "bin" / "python"
    if not py.exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(py), "-c", "import importlib.metadata as m;print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or None
    return None


def start_mock(bench: Bench, name: str, latency: float, cores: str) -> tuple[Proc, int]:
    """A ``mock_upstream.py`` answering after ``latency`` ms, pinned to ``cores``; it and its port."""
    port = free_port()
    budget = 4 * 3600 + (bench.args.soak or 0)  # a safety net: the mock exits by itself
    proc = Proc(name, [bench.python, str(HERE / "mock_upstream.py"), "--port", str(port), "--latency-ms",
                       str(latency), "--chunks", str(bench.stream_chunks), "--max-seconds", str(budget)],
                cores, bench.out / "logs" / f"{name}.log").start()
    wait_ready(proc, port, "/health", 20)
    return proc, port


def write_chorus_config(bench: Bench, fast: int, slow: int) -> Path:
    """``chorus.toml``: providers ``fast``/``slow`` on the two upstream mocks, the key, bots and dataset."""
    path = bench.out / "chorus.toml"
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


def chorus_env(bench: Bench) -> dict[str, str]:
    """The environment of every ``chorus`` command: this run's data directory, no ambient config."""
    env = dict(os.environ)
    env.pop("CHORUS_CONFIG", None)
    env["CHORUS_DATA_DIR"] = str(bench.out / "chorus-data")
    return env


def ingest_dataset(bench: Bench, config: Path) -> dict[str, Any]:
    """Snapshot ``docs/*.md`` next to ``config`` and ingest it with ``chorus datasets`` (before serve).

    Ingesting first keeps the server's startup (and its peak RSS) to a no-op re-sync; the file
    and chunk counts come from ``chorus datasets list``.
    """
    docs = bench.out / RAG_DOCS
    docs.mkdir(exist_ok=True)
    for md in sorted((REPO / "docs").glob("*.md")):
        shutil.copyfile(md, docs / md.name)
    base = [bench.chorus_bin, "datasets"]
    t0 = time.monotonic()
    out = subprocess.run([*base, "ingest", RAG_DATASET, "--config", str(config)], capture_output=True, text=True,
                         env=chorus_env(bench), timeout=300, cwd=str(REPO))
    ingest_s = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"chorus datasets ingest failed: {(out.stdout + out.stderr)[-800:]}")
    out = subprocess.run([*base, "list", "--config", str(config)], capture_output=True, text=True,
                         env=chorus_env(bench), timeout=60, cwd=str(REPO))
    row = next((ln.split() for ln in out.stdout.splitlines() if ln.split()[:1] == [RAG_DATASET]), None)
    if out.returncode != 0 or row is None:
        raise RuntimeError(f"chorus datasets list: no {RAG_DATASET}: {(out.stdout + out.stderr)[-800:]}")
    files, failed, chunks = (int(x) for x in row[-3:])  # ... FILES FAILED CHUNKS
    if not chunks or failed:
        raise RuntimeError(f"dataset {RAG_DATASET}: {chunks} chunks, {failed} files failed")
    return {"bot": RAG_BOT, "dataset": RAG_DATASET, "files": files, "chunks": chunks, "top_k": RAG_TOP_K,
            "ingest_s": ingest_s, "question": RAG_MESSAGES[-1]["content"]}


def check_retrieval(target: Target) -> dict[str, Any]:
    """One request with ``return_citations``: the sources retrieval put into the upstream prompt."""
    body = dict(json.loads(target.body), return_citations=True)
    status, raw = http_request("POST", target.port, "/v1/chat/completions", json.dumps(body).encode(),
                               {"content-type": "application/json", "authorization": target.auth}, timeout=30)
    results = json.loads(raw).get("search_results") if status == 200 else None
    if not results:
        raise RuntimeError(f"{target.name}: retrieval returned no sources (status {status}): {raw[:300]!r}")
    return {"sources": len(results), "titles": [r.get("title") for r in results]}


def write_litellm_config(bench: Bench, fast: int, slow: int) -> Path:
    """``litellm.yaml``: models ``fast``/``slow`` on the same mocks, the same key, nothing else on."""
    path = bench.out / "litellm.yaml"
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


def start_chorus(bench: Bench, config: Path, workers: int, cores: str | None, name: str) -> tuple[Proc, int]:
    """``chorus serve`` with ``workers`` workers (pinned to ``cores`` unless None); it and its port."""
    port = free_port()
    env = chorus_env(bench)
    argv = [bench.chorus_bin, "serve", "--config", str(config), "--host", HOST, "--port", str(port),
            "--workers", str(workers)]
    proc = Proc(name, argv, cores, bench.out / "logs" / f"{name}.log", env).start()
    wait_ready(proc, port, "/health", 60)
    return proc, port


def start_litellm(bench: Bench, exe: str, config: Path) -> tuple[Proc, int]:
    """The LiteLLM proxy, one worker, offline, pinned to the gateway core; it and its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL",
                                                              "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(LITELLM_OFFLINE_MODE="true", LITELLM_LOCAL_MODEL_COST_MAP="true", LITELLM_TELEMETRY="False",
               LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", DISABLE_ADMIN_UI="True",
               NO_DOCS="True", NO_REDOC="True")
    argv = [exe, "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1",
            "--telemetry", "False"]
    proc = Proc("litellm", argv, GATEWAY_CORE, bench.out / "logs" / "litellm.log", env).start()
    wait_ready(proc, port, "/health/liveliness", 180)
    return proc, port
