"""The targets and the scenarios. ``setup`` starts the mocks, Chorus and LiteLLM and defines the
``Target`` routes to them; each scenario (``latency``, ``ladder``, ``stream``, ``ceiling``,
``multiworker``, ``soak``, ``profile``) measures and stores its part of ``bench.results``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from constants import DRIVER_CORE, GATEWAY_CORE, HERE, HOST, RAG_BOT, RAG_DATASET, RAG_MESSAGES, UPSTREAM_KEY
from harness import Bench, Target
from procs import Proc, free_port, status_kb, wait_ready
from profiling import analyse_collapsed
from servers import (
    check_retrieval,
    ensure_litellm,
    ingest_dataset,
    litellm_version,
    machine,
    start_chorus,
    start_litellm,
    start_mock,
    write_chorus_config,
    write_litellm_config,
)


# ------------------------------------------------------------------------------------------------
# servers and targets
def setup(bench: Bench) -> None:
    """Start every server, define ``bench.targets``, check each with one request, record idle RSS."""
    bench.log(f"results in {bench.out}")
    bench.results["machine"] = machine(bench)
    bench.log(f"machine: {bench.results['machine']['cpu']}, {bench.results['machine']['cores']} cores, "
              f"load average {bench.results['machine']['loadavg_start']}")
    start_direct(bench)
    start_chorus_targets(bench)
    if bench.args.no_litellm:
        bench.litellm_problem = "skipped (--no-litellm)"
    else:
        start_litellm_targets(bench)
    check_targets(bench)
    bench.results["retrieval_bot"].update(check_retrieval(bench.targets["chorus-rag"]))
    bench.log(f"retrieval bot: {bench.results['retrieval_bot']['sources']} sources per request")
    if bench.litellm_problem:
        bench.log(f"LiteLLM not measured: {bench.litellm_problem}")
    bench.results["litellm_problem"] = bench.litellm_problem
    bench.results["machine"]["litellm"] = litellm_version(bench)
    time.sleep(1.0)
    bench.results["idle_rss_mb"] = {name: p.rss_bytes() / 2**20 for name, p in bench.gateways.items()}


def start_direct(bench: Bench) -> None:
    """The upstream mocks (core 0, with the load generator) and the 'direct' mocks (core 1, like a gateway)."""
    _, bench.up_fast = start_mock(bench, "mock-upstream-0ms", 0, DRIVER_CORE)
    _, bench.up_slow = start_mock(bench, "mock-upstream-50ms", 50, DRIVER_CORE)
    d_fast, p_dfast = start_mock(bench, "mock-direct-0ms", 0, GATEWAY_CORE)
    d_slow, p_dslow = start_mock(bench, "mock-direct-50ms", 50, GATEWAY_CORE)
    bench.gateways["direct"] = d_fast
    T = bench.targets
    T["direct"] = Target("direct", "direct (mock)", p_dfast, "gpt-4o-mini", d_fast, auth=False)
    T["direct@50"] = Target("direct", "direct (mock)", p_dslow, "gpt-4o-mini", d_slow, auth=False)
    T["direct-stream"] = Target("direct", "direct (mock)", p_dfast, "gpt-4o-mini", d_fast, stream=True, auth=False)


def start_chorus_targets(bench: Bench) -> None:
    """The pinned one-worker Chorus (after ingesting the retrieval bot's dataset) and its five routes."""
    chorus_cfg = write_chorus_config(bench, bench.up_fast, bench.up_slow)
    bench.results["retrieval_bot"] = rag = ingest_dataset(bench, chorus_cfg)
    bench.log(f"dataset {RAG_DATASET}: {rag['files']} docs files, {rag['chunks']} chunks, ingested in {rag['ingest_s']:.1f} s")
    chorus, p_chorus = start_chorus(bench, chorus_cfg, 1, GATEWAY_CORE, "chorus")
    bench.gateways["chorus"] = chorus
    T = bench.targets
    T["chorus"] = Target("chorus", "Chorus", p_chorus, "model/name=fast/gpt-4o-mini", chorus)
    T["chorus@50"] = Target("chorus", "Chorus", p_chorus, "model/name=slow/gpt-4o-mini", chorus)
    T["chorus-bot"] = Target("chorus-bot", "Chorus bot", p_chorus, "bot/id=ada", chorus)
    T["chorus-rag"] = Target("chorus-rag", "Chorus bot + retrieval", p_chorus, f"bot/id={RAG_BOT}", chorus,
                             messages=RAG_MESSAGES)
    T["chorus-stream"] = Target("chorus", "Chorus", p_chorus, "model/name=fast/gpt-4o-mini", chorus, stream=True)
    # The same request through POST /v1/responses: store false (the chat request's work), and store true
    # (the default: the response is written to the state store before it is returned).
    T["chorus-responses"] = Target("chorus-responses", "Chorus /v1/responses", p_chorus, "model/name=fast/gpt-4o-mini",
                                   chorus, responses=True)
    T["chorus-responses-store"] = Target("chorus-responses-store", "Chorus /v1/responses, store", p_chorus,
                                         "model/name=fast/gpt-4o-mini", chorus, responses=True, store=True)
    T["chorus-responses-stream"] = Target("chorus-responses", "Chorus /v1/responses", p_chorus,
                                          "model/name=fast/gpt-4o-mini", chorus, responses=True, stream=True)


def start_litellm_targets(bench: Bench) -> None:
    """LiteLLM (installed on first use) and its routes; on failure ``bench.litellm_problem`` says why."""
    exe = ensure_litellm(bench)
    if not exe:
        return
    try:
        ll, p_ll = start_litellm(bench, exe, write_litellm_config(bench, bench.up_fast, bench.up_slow))
        bench.gateways["litellm"] = ll
        T = bench.targets
        T["litellm"] = Target("litellm", "LiteLLM", p_ll, "fast", ll)
        T["litellm@50"] = Target("litellm", "LiteLLM", p_ll, "slow", ll)
        T["litellm-stream"] = Target("litellm", "LiteLLM", p_ll, "fast", ll, stream=True)
    except RuntimeError as exc:
        bench.litellm_problem = f"did not start offline: {str(exc)[:400]}"


def check_targets(bench: Bench) -> None:
    """One request per target: a failing LiteLLM is dropped (and said why), any other failure stops the run."""
    T = bench.targets
    for key, target in list(T.items()):
        problem = target.check()
        if problem:
            if target.name == "litellm":
                bench.litellm_problem = f"request failed: {problem}"
                for k in [k for k in T if k.startswith("litellm")]:
                    T.pop(k, None)
                bench.gateways.pop("litellm", None)
                continue
            raise RuntimeError(f"{key} does not work: {problem}")


# ------------------------------------------------------------------------------------------------
# scenarios
def latency(bench: Bench) -> None:
    """Added latency at c=1: interleaved rounds of sequential requests to every plain-request target."""
    targets = bench.available("direct", "chorus", "chorus-bot", "chorus-rag", "chorus-responses",
                              "chorus-responses-store", "litellm")
    bench.log(f"added latency at c=1: {bench.lat_rounds} rounds x {bench.lat_per_round} requests x {len(targets)} targets")
    cpu0 = {t.name: t.proc.cpu_seconds() for t in targets}
    res = bench.loadgen("latency", targets, ["--rounds", str(bench.lat_rounds), "--per-round",
                                             str(bench.lat_per_round), "--warmup", "100"], timeout=900)
    for t in targets:  # chorus, chorus-bot and chorus-rag share a process: CPU split is not attributable
        res[t.name]["proc_cpu_s"] = t.proc.cpu_seconds() - cpu0[t.name]
    bench.results["latency"] = res
    bench.save()


def ladder(bench: Bench) -> None:
    """The concurrency ladder: closed-loop runs per mock latency and concurrency, the order rotated."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    per_target = {0: bench.available("direct", "chorus", "litellm"),
                  50: bench.available("direct@50", "chorus@50", "litellm@50")}
    bots = len(bench.available("chorus-bot", "chorus-rag", "chorus-responses", "chorus-responses-store"))
    total = (sum(len(v) for v in per_target.values()) * len(bench.ladder) + bots) * bench.repeats
    bench.log(f"concurrency ladder {bench.ladder} x mocks {bench.mock_latencies} ms: {total} runs of "
              f"{bench.rung_seconds:g} s ({'wrk' if bench.wrk else 'asyncio loadgen'})")
    for rep in range(bench.repeats):
        for latency in bench.mock_latencies:
            for c in bench.ladder:
                targets = list(per_target[latency])
                if latency == 0 and c == 32:
                    targets += bench.available("chorus-bot", "chorus-rag", "chorus-responses", "chorus-responses-store")
                k = (rep + c) % len(targets)  # rotate the order between rungs and repeats
                for t in targets[k:] + targets[:k]:
                    res = bench.closed_run(t, c, bench.rung_seconds)
                    rows.setdefault(f"{latency}ms/c{c}", {}).setdefault(t.name, []).append(res)
            bench.log(f"  repeat {rep + 1}/{bench.repeats}, mock {latency} ms done")
    bench.results["ladder"] = rows
    bench.save()


def stream(bench: Bench) -> None:
    """Streaming: TTFT at c=1, then the relay rate (chunks/s) at ``stream_conc`` concurrent streams."""
    targets = bench.available("direct-stream", "chorus-stream", "chorus-responses-stream", "litellm-stream")
    bench.log(f"streaming TTFT at c=1 ({bench.stream_chunks} chunks per stream): {bench.stream_rounds} rounds x "
              f"{bench.stream_per_round} streams x {len(targets)} targets")
    bench.results["stream_ttft"] = bench.loadgen(
        "stream", targets, ["--rounds", str(bench.stream_rounds), "--per-round", str(bench.stream_per_round),
                            "--warmup", "20"], timeout=900)
    secs = max(2.0, bench.rung_seconds)
    bench.log(f"streaming relay rate: c={bench.stream_conc}, {secs:g} s x {bench.repeats} repeats x {len(targets)} targets")
    rate: dict[str, list[dict[str, Any]]] = {}
    for rep in range(bench.repeats):
        k = rep % len(targets)
        for t in targets[k:] + targets[:k]:
            rate.setdefault(t.name, []).append(bench.closed_run(t, bench.stream_conc, secs))
    bench.results["stream_rate"] = rate
    bench.save()


def multiworker(bench: Bench) -> None:
    """``--workers 1`` against ``--workers 2``, both unpinned, at c = 32 and 128 with both mocks."""
    if bench.args.no_multiworker:
        return
    bench.log("multi-worker: chorus --workers 1 and --workers 2, both unpinned (co-located with the mock and "
              "the load generator)")
    cfg = bench.out / "chorus.toml"
    started: list[Proc] = []
    try:
        # The 1-worker reference is a second, unpinned instance: the pinned one of the ladder would
        # compare a gateway with a core of its own against one that shares both cores.
        proc1, port1 = start_chorus(bench, cfg, 1, None, "chorus-1w")
        started.append(proc1)
        proc, port = start_chorus(bench, cfg, 2, None, "chorus-2w")
        started.append(proc)
    except RuntimeError as exc:
        bench.results["multiworker_problem"] = str(exc)[:500]
        for p in started:
            p.stop()
        return
    bench.gateways["chorus-1w"] = proc1
    bench.gateways["chorus-2w"] = proc
    one = {0: Target("chorus", "Chorus, 1 worker", port1, "model/name=fast/gpt-4o-mini", proc1),
           50: Target("chorus", "Chorus, 1 worker", port1, "model/name=slow/gpt-4o-mini", proc1)}
    two = {0: Target("chorus-2w", "Chorus, 2 workers", port, "model/name=fast/gpt-4o-mini", proc),
           50: Target("chorus-2w", "Chorus, 2 workers", port, "model/name=slow/gpt-4o-mini", proc)}
    problem = two[0].check() or one[0].check()
    if problem:
        bench.results["multiworker_problem"] = problem
        for p in started:
            p.stop()
        bench.gateways.pop("chorus-1w", None)
        bench.gateways.pop("chorus-2w", None)
        return
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    reps = max(1, bench.repeats - 1) if bench.quick else bench.repeats
    for rep in range(reps):
        for latency in (0, 50):
            for c in (32, 128):
                pair = [one[latency], two[latency]]
                if rep % 2:
                    pair.reverse()
                for t in pair:  # unpinned load generator: both cores are shared by everything
                    rows.setdefault(f"{latency}ms/c{c}", {}).setdefault(t.name, []).append(
                        bench.closed_run(t, c, bench.rung_seconds, cores=None))
    bench.results["multiworker"] = rows
    bench.results["multiworker_peak_rss_mb"] = proc.peak_rss_bytes() / 2**20
    bench.results["multiworker_rss_by_process_mb"] = {str(pid): status_kb(pid, "VmHWM") / 1024 for pid in proc.tree()}
    for p in started:
        p.stop()
    bench.gateways.pop("chorus-1w", None)
    bench.gateways.pop("chorus-2w", None)
    bench.save()


def ceiling(bench: Bench) -> None:
    """Upper bounds on this stack (``benchmarks/ceiling_app.py``), interleaved with direct and Chorus.

    Each reference app runs under the same uvicorn (httptools, uvloop), one worker, pinned to the
    gateway core, and does strictly less than Chorus: ``static`` answers from memory (the server
    stack alone); ``http1`` relays the body to the 0 ms mock with the driver's client
    (:class:`chorus.http1.HTTPPool`, same base URL, headers and pool size) and relays the answer
    back (a bare proxy: no auth, no JSON, no pipeline). If aiohttp is importable by the server
    Python, the same relay on aiohttp (the driver's former client) is measured as an extra row.
    """
    if bench.args.no_ceiling:
        return
    modes = ["static", "http1"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run([bench.python, "-c", "import aiohttp"], capture_output=True, timeout=30, check=False).returncode == 0:
            modes.append("aiohttp")
    bench.log("ceilings: uvicorn + a fixed answer, uvicorn + a chorus.http1 relay"
              f"{' (and an aiohttp relay)' if 'aiohttp' in modes else ''} (benchmarks/ceiling_app.py)")
    started: list[Proc] = []
    targets: list[Target] = []
    try:
        for mode in modes:
            port = free_port()
            env = dict(os.environ, CEILING_MODE=mode, CEILING_UPSTREAM=f"http://{HOST}:{bench.up_fast}/v1",
                       CEILING_API_KEY=UPSTREAM_KEY)
            argv = [bench.python, "-m", "uvicorn", "ceiling_app:app", "--app-dir", str(HERE), "--host", HOST,
                    "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--lifespan", "on"]
            proc = Proc(f"ceiling-{mode}", argv, GATEWAY_CORE, bench.out / "logs" / f"ceiling-{mode}.log", env).start()
            started.append(proc)
            wait_ready(proc, port, "/health", 30)
            target = Target(f"ceiling-{mode}", f"uvicorn + {mode}", port, "gpt-4o-mini", proc, auth=False)
            problem = target.check()
            if problem:
                raise RuntimeError(f"ceiling-{mode}: {problem}")
            targets.append(target)
    except RuntimeError as exc:
        bench.results["ceiling_problem"] = str(exc)[:500]
        for p in started:
            p.stop()
        return
    targets += bench.available("direct", "chorus")
    rows: dict[str, list[dict[str, Any]]] = {}
    for rep in range(bench.repeats):
        k = rep % len(targets)
        for t in targets[k:] + targets[:k]:
            rows.setdefault(t.name, []).append(bench.closed_run(t, 32, bench.rung_seconds))
    bench.results["ceiling"] = rows
    for p in started:
        p.stop()
    bench.save()


def soak(bench: Bench) -> None:
    """``--soak``: steady plain and streaming load on Chorus, RSS sampled every 5 s."""
    seconds = bench.args.soak
    if not seconds:
        return
    t_plain, t_stream = bench.targets["chorus"], bench.targets["chorus-stream"]
    proc = t_plain.proc
    bench.log(f"soak: {seconds:g} s of steady load on Chorus (wrk c=16 plain + 4 streaming clients)")
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
        results["stream"] = bench.closed_run(t_stream, 4, seconds)

    streamer = threading.Thread(target=streams, daemon=True)
    streamer.start()
    try:
        results["plain"] = bench.closed_run(t_plain, 16, seconds)
    finally:
        streamer.join(seconds + 120)
        stop.set()
        sampler.join(10)
    after = [s for s in samples if s[0] >= 10.0] or samples
    bench.results["soak"] = {
        "seconds": seconds,
        "rss_start_mb": after[0][1] if after else None,
        "rss_end_mb": after[-1][1] if after else None,
        "rss_max_mb": max(s[1] for s in samples) if samples else None,
        "samples": samples,
        **results,
    }
    bench.save()


def profile(bench: Bench) -> None:
    """``--profile``: py-spy of the Chorus worker under wrk load, as collapsed stacks and a flame graph."""
    if not bench.args.profile:
        return
    spy = shutil.which("py-spy") or str(Path(bench.python).parent / "py-spy")
    if not Path(spy).exists():
        bench.results["profile_problem"] = "py-spy not installed (pip install py-spy into the chorus venv)"
        bench.log(bench.results["profile_problem"])
        return
    target = bench.targets["chorus"]
    seconds = max(5.0, bench.args.profile_seconds)
    out: dict[str, Any] = {}
    for fmt, name in (("raw", "profile.txt"), ("flamegraph", "profile.svg")):
        conc = bench.args.profile_concurrency
        bench.log(f"py-spy record ({fmt}) of Chorus for {seconds:g} s under wrk c={conc}, 0 ms mock")
        dest = bench.out / name
        argv = [spy, "record", "--pid", str(target.proc.pid), "--rate", "200", "--duration", str(int(seconds)),
                "--format", fmt, "-o", str(dest)]
        argv.append("--gil")  # only stacks holding the GIL: CPU time, not the loop waiting in epoll or idle threads
        spy_proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        load = bench.closed_run(target, conc, seconds - 1.0)
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
    out["concurrency"] = bench.args.profile_concurrency
    bench.results["profile"] = out
    bench.save()

