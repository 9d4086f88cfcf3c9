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

# The parts, each a module next to this file (``python benchmarks/run.py`` puts benchmarks/ first on
# sys.path): constants (paths, ports, keys, requests), procs (server processes, /proc readings),
# harness (Target, Bench: the run's state and load generators), servers (configs, LiteLLM, starting
# the servers), scenarios (the targets and each measurement), profiling (py-spy stack analysis) and
# report (the markdown). The mock, the load generator and the reference apps run as their own scripts.

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also as ``python -m benchmarks.run``
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios
from constants import DOC
from harness import Bench
from procs import cpu_times, stop_all
from report import render, write_doc


def run(bench: Bench) -> None:
    """Start the servers, run the chosen scenarios in order, then write results.json, summary.md and the doc."""
    bench.results["settings"] = bench.settings()
    t0 = time.monotonic()
    stat0 = cpu_times()
    scenarios.setup(bench)
    only = set(bench.args.only.split(",")) if bench.args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    if want("latency"):
        scenarios.latency(bench)
    if want("ladder"):
        scenarios.ladder(bench)
    if want("stream"):
        scenarios.stream(bench)
    bench.results["peak_rss_mb"] = {name: p.peak_rss_bytes() / 2**20 for name, p in bench.gateways.items()}
    if want("ceiling"):
        scenarios.ceiling(bench)
    if want("multiworker"):
        scenarios.multiworker(bench)
    if want("soak"):
        scenarios.soak(bench)
    if want("profile"):
        scenarios.profile(bench)
    bench.results["machine"]["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    stat1 = cpu_times()
    if len(stat0) > 7 and len(stat1) > 7:
        total = sum(stat1[:8]) - sum(stat0[:8])
        bench.results["machine"]["steal_pct"] = 100.0 * (stat1[7] - stat0[7]) / total if total else None
    bench.results["elapsed_s"] = time.monotonic() - t0
    bench.save()
    md = render(bench.results)
    (bench.out / "summary.md").write_text(md)
    if not bench.args.no_doc and not bench.args.only:  # a partial run never replaces the full table
        write_doc(md, Path(bench.args.doc))
        bench.log(f"wrote the results section of {bench.args.doc}")
    print(md)
    bench.log(f"done in {bench.results['elapsed_s']:.0f} s; raw results in {bench.out}")


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
        run(bench)
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
