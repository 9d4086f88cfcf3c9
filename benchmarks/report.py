"""The report: number formatting, ``render`` (the results section of docs/benchmarks.md, built from
``results.json`` one table at a time) and ``write_doc`` (replaces that section between its markers)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from constants import RAG_BOT

START_MARK = "<!-- benchmark-results:start -->"
END_MARK = "<!-- benchmark-results:end -->"


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over ``rows``, NaN and missing left out; None when nothing is left."""
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
    """The markdown of one run's results (``r`` is what ``results.json`` holds)."""
    lines: list[str] = []
    for section in (_header, _targets, _latency, _ladder, _streaming, _efficiency, _ceiling, _multiworker, _soak,
                    _profile):
        lines += section(r)
    return "\n".join(lines).rstrip() + "\n"


def peak(ladder: dict[str, dict[str, list[dict[str, Any]]]], name: str, latency: int = 0) -> tuple[float | None, str]:
    """The best median req/s of ``name`` over the ladder rungs with this mock latency, and its rung (``c32``)."""
    best, where = None, ""
    for key, per in ladder.items():
        if not key.startswith(f"{latency}ms/"):
            continue
        v = med(per.get(name, []), "rps")
        if v is not None and (best is None or v > best):
            best, where = v, key.split("/")[1]
    return best, where


def _header(r: dict[str, Any]) -> list[str]:
    """Title, machine and software, settings, and why LiteLLM was not measured."""
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
        f"chorus.http1 (httptools {stack.get('httptools', '?')}) upstream client, "
        f"uvicorn {stack.get('uvicorn', '?')} with httptools "
        f"{stack.get('httptools', '?')} and uvloop {stack.get('uvloop', '?')}, pluggy {stack.get('pluggy', '?')}); "
        f"LiteLLM {m.get('litellm') or 'not measured'}; load generator {s['load_generator']}"
        f"{' ' + m['wrk'] if m.get('wrk') and s['load_generator'] == 'wrk' else ''} + asyncio client. "
        f"Load average {m.get('loadavg_start', 0):.2f} at start, {m.get('loadavg_end') or 0:.2f} at end "
        f"(other work on the machine shows up here); CPU steal {m.get('steal_pct') or 0:.1f} %. "
        f"Run took {r.get('elapsed_s', 0) / 60:.1f} min."
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
    return lines


def _targets(r: dict[str, Any]) -> list[str]:
    """The goals of issue #5, measured."""
    s = r["settings"]
    lat = r.get("latency", {})
    ladder = r.get("ladder", {})
    stream = r.get("stream_ttft", {})
    rate = r.get("stream_rate", {})
    direct_lat = lat.get("direct", {})
    lines: list[str] = []
    ch = lat.get("chorus", {})
    add50 = ch.get("p50_us", 0) - direct_lat.get("p50_us", 0) if ch and direct_lat else None
    add99 = ch.get("p99_us", 0) - direct_lat.get("p99_us", 0) if ch and direct_lat else None
    peak_direct, _ = peak(ladder, "direct")
    peak_chorus, _ = peak(ladder, "chorus")
    peak_ll, _ = peak(ladder, "litellm")
    st_ch, st_d = stream.get("chorus", {}), stream.get("direct", {})
    add_ttft = st_ch.get("ttft_p50_us", 0) - st_d.get("ttft_p50_us", 0) if st_ch and st_d else None
    relay = med(rate.get("chorus", []), "events_per_s")
    peak_rss = r.get("peak_rss_mb", {}).get("chorus")
    best_gw = max([v for v in (peak_chorus, peak_ll) if v] or [0])
    lines.append("#### Targets (issue #5)")
    lines.append("")
    lines.append("| target | goal | measured | |")
    lines.append("| --- | --- | --- | --- |")
    lines.append(f"| added latency p50, c=1 | < 1 ms | {fmt_ms(add50, 3)} ms | "
                 f"{verdict(None if add50 is None else add50 < 1000)} |")
    lines.append(f"| added latency p99, c=1 | < 3 ms | {fmt_ms(add99, 3)} ms | "
                 f"{verdict(None if add99 is None else add99 < 3000)} |")
    lines.append(f"| peak throughput vs LiteLLM (0 ms mock) | ≥ 10× | {ratio(peak_chorus, peak_ll)} ({fmt_num(peak_chorus)} vs "
                 f"{fmt_num(peak_ll)} req/s) | "
                 f"{verdict(None if not (peak_chorus and peak_ll) else peak_chorus >= 10 * peak_ll)} |")
    lines.append(f"| peak throughput vs the mock's direct rate | ≥ 0.25× | {ratio(peak_chorus, peak_direct)} "
                 f"({fmt_num(peak_chorus)} vs {fmt_num(peak_direct)} req/s) | "
                 f"{verdict(None if not (peak_chorus and peak_direct) else peak_chorus >= 0.25 * peak_direct)} |")
    lines.append(f"| added TTFT p50, c=1 | < 2 ms | {fmt_ms(add_ttft, 3)} ms | "
                 f"{verdict(None if add_ttft is None else add_ttft < 2000)} |")
    lines.append(f"| streaming relay, c={s['stream_concurrency']} | ≥ 20,000 chunks/s | {fmt_num(relay)} chunks/s | "
                 f"{verdict(None if relay is None else relay >= 20000)} |")
    lines.append(f"| peak RSS, one worker | < 150 MB | {fmt_num(peak_rss, 1)} MB | "
                 f"{verdict(None if peak_rss is None else peak_rss < 150)} |")
    lines.append(f"| mock not the bottleneck | ≥ 5× best gateway | {ratio(peak_direct, best_gw)} | "
                 f"{verdict(None if not (peak_direct and best_gw) else peak_direct >= 5 * best_gw)} |")
    lines.append("")
    return lines


def _latency(r: dict[str, Any]) -> list[str]:
    """Added latency at concurrency 1."""
    lat = r.get("latency", {})
    direct_lat = lat.get("direct", {})
    lines: list[str] = []
    if lat:
        lines.append("#### Added latency at concurrency 1 (0 ms mock, interleaved rounds)")
        lines.append("")
        lines.append("| target | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | errors |")
        lines.append("| --- | --: | --: | --: | --: | --: | --: |")
        for name, label in (("direct", "direct (mock)"), ("chorus", "Chorus, `model/name=`"),
                            ("chorus-bot", "Chorus, `bot/id=` with backstory"),
                            ("chorus-rag", "Chorus, `bot/id=` with backstory + retrieval"),
                            ("chorus-responses", "Chorus, `POST /v1/responses` (`store: false`)"),
                            ("chorus-responses-store", "Chorus, `POST /v1/responses` (`store: true`)"),
                            ("litellm", "LiteLLM")):
            row = lat.get(name)
            if not row:
                continue
            a50 = row["p50_us"] - direct_lat["p50_us"] if name != "direct" else None
            a99 = row["p99_us"] - direct_lat["p99_us"] if name != "direct" else None
            lines.append(f"| {label} | {fmt_ms(row['p50_us'], 3)} | {fmt_ms(row['p90_us'], 3)} | {fmt_ms(row['p99_us'], 3)} | "
                         f"{fmt_ms(a50, 3)} | {fmt_ms(a99, 3)} | {row['errors']} |")
        lines.append("")
    return lines


def _ladder(r: dict[str, Any]) -> list[str]:
    """The concurrency ladder, and the bot requests (without and with retrieval) against the plain model."""
    lat = r.get("latency", {})
    ladder = r.get("ladder", {})
    lines: list[str] = []
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
                            (rag_label, "chorus-rag"),
                            ("`model/name=fast/gpt-4o-mini` as `POST /v1/responses`, `store: false`", "chorus-responses"),
                            ("`model/name=fast/gpt-4o-mini` as `POST /v1/responses`, `store: true`",
                             "chorus-responses-store")):
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
    return lines


def _streaming(r: dict[str, Any]) -> list[str]:
    """TTFT and the streaming relay rate."""
    s = r["settings"]
    stream = r.get("stream_ttft", {})
    rate = r.get("stream_rate", {})
    st_d = stream.get("direct", {})
    lines: list[str] = []
    if stream:
        lines.append(f"#### Streaming ({s['stream_chunks']} content chunks per response, 0 ms mock)")
        lines.append("")
        lines.append(f"| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | events per stream "
                     f"| relay chunks/s at c={s['stream_concurrency']} "
                     f"| CPU µs per chunk |")
        lines.append("| --- | --: | --: | --: | --: | --: | --: |")
        for name, label in (("direct", "direct (mock)"), ("chorus", "Chorus"),
                            ("chorus-responses", "Chorus, `POST /v1/responses`"), ("litellm", "LiteLLM")):
            row = stream.get(name)
            if not row:
                continue
            a = row["ttft_p50_us"] - st_d["ttft_p50_us"] if name != "direct" and st_d else None
            rr = rate.get(name, [])
            lines.append(f"| {label} | {fmt_ms(row['ttft_p50_us'], 3)} | {fmt_ms(row['ttft_p99_us'], 3)} | {fmt_ms(a, 3)} | "
                         f"{row.get('events_per_stream', 0):.0f} | {fmt_num(med(rr, 'events_per_s'))} | "
                         f"{fmt_num(med(rr, 'cpu_us_per_event'), 1) if name != 'direct' else '–'} |")
        lines.append("")
    return lines


def _efficiency(r: dict[str, Any]) -> list[str]:
    """CPU per request and RSS of each gateway's process tree."""
    ladder = r.get("ladder", {})
    lines: list[str] = []
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
        lines.append(f"| {label} | {fmt_num(c1)} | {fmt_num(c32)} | {fmt_num(c128)} | {fmt_num(c8)} | "
                     f"{fmt_num(r.get('idle_rss_mb', {}).get(name), 1)} | "
                     f"{fmt_num(r['peak_rss_mb'][name], 1)} |")
    lines.append("")
    return lines


def _ceiling(r: dict[str, Any]) -> list[str]:
    """What this stack allows: the reference apps of ``ceiling_app.py``."""
    stack = r["machine"].get("stack", {})
    lines: list[str] = []
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
    return lines


def _multiworker(r: dict[str, Any]) -> list[str]:
    """One worker against two, both unpinned."""
    lines: list[str] = []
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
                         f"{fmt_num(med(two, 'rps'))} | {fmt_ms(med(two, 'p99_us'))} | "
                         f"{ratio(med(two, 'rps'), med(one, 'rps'))} |")
        lines.append(f"\nPeak RSS of the 2-worker tree (supervisor + workers): "
                     f"{fmt_num(r.get('multiworker_peak_rss_mb'), 1)} MB.")
        lines.append("")
    elif r.get("multiworker_problem"):
        lines += [f"Multi-worker run failed: {r['multiworker_problem']}", ""]
    return lines


def _soak(r: dict[str, Any]) -> list[str]:
    """RSS over the soak."""
    lines: list[str] = []
    soak = r.get("soak")
    if soak:
        lines.append(f"#### Soak ({soak['seconds']:g} s, wrk c=16 plain + 4 streaming clients on Chorus)")
        lines.append("")
        p, st = soak.get("plain", {}), soak.get("stream", {})
        lines.append(f"RSS {fmt_num(soak.get('rss_start_mb'), 1)} MB after 10 s, "
                     f"{fmt_num(soak.get('rss_end_mb'), 1)} MB at the end "
                     f"(max {fmt_num(soak.get('rss_max_mb'), 1)} MB); {fmt_num(p.get('requests'))} plain requests at "
                     f"{fmt_num(p.get('rps'))} req/s, {fmt_num(st.get('requests'))} streams; errors {p.get('errors', 0)} + "
                     f"{st.get('errors', 0)}.")
        lines.append("")
    return lines


def _profile(r: dict[str, Any]) -> list[str]:
    """Where the time goes, from the py-spy profile."""
    lines: list[str] = []
    prof = r.get("profile")
    if prof and prof.get("analysis"):
        a = prof["analysis"]
        lines.append(f"#### py-spy profile of Chorus (wrk c={prof.get('concurrency', 32)}, 0 ms mock, "
                     f"{a['samples']} samples holding "
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
    return lines


def write_doc(md: str, path: Path) -> None:
    """Replace the results section of ``path`` (between the markers), or append one."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n{md}{END_MARK}"
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    path.write_text(text)
