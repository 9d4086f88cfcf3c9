#!/usr/bin/env python3
"""Answer quality of the embedded demo bot: does it answer questions about Chorus correctly, and cited?

    python benchmarks/demo_quality.py                 # every question, the local model on 1 thread
    python benchmarks/demo_quality.py --threads 2 --stream
    python benchmarks/demo_quality.py --write         # also record the result in docs/benchmarks.md

The embedded default configuration (what ``chorus serve`` runs without ``--config``: the local
Gemma 3 270M model of ``chorus-provider-llamacpp``, the ``chorus-docs`` dataset made from
``docs/*.md``, the ``demo`` bot) is served on a loopback port in a fresh data directory, and each
question below goes to ``bot/id=demo`` through the official ``openai`` SDK, exactly as a user's
client would send it (no sampling parameters but a fixed ``seed``, so a run can be repeated: the bot's
own defaults apply, temperature 0.2). ``OPENAI_API_KEY`` is
removed from the environment so the local model answers.

Each question was written from the documentation, with the fact a correct answer must state as a
regular expression (case-insensitive). An answer is **correct** when it matches; it is **cited**
when it carries at least one ``url_citation`` annotation, and **cited right** when one of those
points at a source chunk that states the fact. Prints one line per question and a summary;
``--write`` puts the summary between the ``demo-quality`` markers of ``docs/benchmarks.md`` and every
answer in ``benchmarks/demo_quality.md`` (not under ``docs/``: the demo answers from ``docs/*.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openai

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
ANSWERS = HERE / "demo_quality.md"
START_MARK = "<!-- demo-quality:start -->"
END_MARK = "<!-- demo-quality:end -->"


@dataclass(frozen=True)
class Question:
    text: str
    fact: str    # regular expression the answer must match (case-insensitive)
    page: str    # the docs page the question was written from
    held_out: bool = False  # written after answer_style "quote" was tuned, never used to tune it

# Written from the docs; each fact is stated on the named page.
QUESTIONS: list[Question] = [
    Question("Which selector do I use to talk to a configured bot?", r"bot/id=", "selectors.md"),
    Question("Which selector picks a plain model of a provider?", r"model/name=", "selectors.md"),
    Question("What is the default port of chorus serve?", r"\b8000\b", "configuration.md"),
    Question("Which command prints a new API key?", r"keys new", "configuration.md"),
    Question("I lost the default workspace key. How do I get a new one?", r"reset-default", "configuration.md"),
    Question("What is the default chunk size in characters?", r"\b1,?200\b", "knowledge.md"),
    Question("What file format is the Chorus configuration written in?", r"\btoml\b", "configuration.md"),
    Question("What database does the built-in vector store use?", r"sqlite", "knowledge.md"),
    Question("Which ranking does the built-in lexical search use?", r"bm25", "knowledge.md"),
    Question("Which command validates a configuration without serving?", r"config check", "configuration.md"),
    Question("What does the calculator tool do?", r"arithmetic", "skillsets.md"),
    Question("How many server-side tool rounds does a request get by default?", r"\b8\b|eight", "configuration.md"),
    Question("How deep may team members delegate by default?", r"\b3\b|three", "search-and-teams.md"),
    Question("Which environment variable sets the data directory?", r"CHORUS_DATA_DIR", "configuration.md"),
    Question("Which local model does the embedded default run?", r"gemma", "configuration.md"),
    Question("What status does a request body larger than max_body_bytes get?", r"\b413\b", "configuration.md"),
    Question("Which vector store can replace the built-in SQLite store for a distributed deployment?",
             r"qdrant", "knowledge.md"),
    Question("What type of annotation does Chorus return for citations?", r"url_citation", "knowledge.md"),
    Question("Which search mode makes Chorus search the web before the model answers?", r"always", "search-and-teams.md"),
    Question("Which web search engine driver is built in?", r"searxng", "search-and-teams.md"),
    Question("How many model calls may a bot and its team make per request by default?", r"\b24\b",
             "search-and-teams.md"),
    Question("Which environment variable makes the embedded default use OpenAI?", r"OPENAI_API_KEY", "configuration.md"),
    Question("Which bot setting lists the datasets a bot answers from?", r"datasets", "knowledge.md"),
    Question("Which command lists the installed plugins?", r"chorus plugins", "plugins.md"),
    Question("Which HTTP header carries the workspace key?", r"authorization|bearer", "api.md"),
    # held out: written once the quote ranking was fixed, to see how it does on questions it was not tuned on
    Question("Which address does chorus serve listen on by default?", r"127\.0\.0\.1", "configuration.md", True),
    Question("How many times is a provider retried after a transient failure by default?", r"\b2\b|two",
             "configuration.md", True),
    Question("How long does an open circuit skip the provider?", r"\b30\b", "configuration.md", True),
    Question("How many seconds may a whole upstream call take by default?", r"\b600\b", "configuration.md", True),
    Question("How long does a parked turn wait for the client's tool results?", r"\b3600\b", "configuration.md", True),
    Question("Which option runs several worker processes?", r"workers", "configuration.md", True),
    Question("Which built-in tool reads a web page?", r"fetch_url", "skillsets.md", True),
    Question("Where are the Prometheus metrics served?", r"/metrics", "observability.md", True),
    Question("Which status does a client get when every provider's circuit is open?", r"\b503\b", "api.md", True),
    Question("Which contrib package turns an MCP server's tools into a bot's tools?", r"chorus-tools-mcp",
             "skillsets.md", True),
    Question("Which driver keeps vector store chunks in PostgreSQL?", r"pgvector", "knowledge.md", True),
    Question("How do I add my own tool to Chorus?", r"plugin|entry point|driver", "tool-plugins.md", True),
]


@dataclass
class Result:
    question: Question
    answer: str
    cited: bool
    cited_page: bool   # a cited chunk states the fact
    seconds: float

    @property
    def correct(self) -> bool:
        return re.search(self.question.fact, self.answer, re.IGNORECASE) is not None


SEED = 0  # the bot samples at temperature 0.2: a fixed seed makes a run repeatable


def ask(client: openai.OpenAI, question: Question, *, stream: bool) -> Result:
    started = time.perf_counter()
    messages = [{"role": "user", "content": question.text}]
    urls: list[str] = []
    if stream:
        parts: list[str] = []
        for chunk in client.chat.completions.create(model="bot/id=demo", messages=messages,  # type: ignore[arg-type]
                                                    stream=True, seed=SEED):
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                extra = choice.delta.model_extra or {}
                urls += [a["url_citation"]["url"] for a in extra.get("annotations") or []
                         if a.get("type") == "url_citation"]
        answer = "".join(parts)
    else:
        completion = client.chat.completions.create(model="bot/id=demo", messages=messages, seed=SEED)  # type: ignore[arg-type]
        message = completion.choices[0].message
        answer = message.content or ""
        urls = [a.url_citation.url for a in message.annotations or [] if a.type == "url_citation"]
    holds_fact = any(re.search(question.fact, CHUNKS.get(u, ""), re.IGNORECASE) for u in urls)
    return Result(question, answer.strip(), bool(urls), holds_fact, time.perf_counter() - started)


CHUNKS: dict[str, str] = {}  # citation URL → chunk text, filled from the knowledge store after startup


def serve_and_ask(threads: int | None, stream: bool, only: list[int] | None, overrides: dict[str, object],
                  retrieval: dict[str, object]) -> tuple[list[Result], dict[str, str]]:
    import msgspec

    from chorus.app import create_app
    from chorus.runtime.defaults import default_config
    from chorus.testing.server import LiveServer

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    with tempfile.TemporaryDirectory(prefix="chorus-demo-quality-") as data:
        env["CHORUS_DATA_DIR"] = data
        config, key = default_config(env)
        assert key is not None
        provider = config.providers[0]
        if threads:
            provider["n_threads"] = threads
        provider.update(overrides)
        if retrieval:
            bot = config.bots[0]
            config.bots[0] = msgspec.structs.replace(bot, retrieval=msgspec.structs.replace(bot.retrieval, **retrieval))
        info = {"provider": f"{provider['driver']} {provider.get('models')}", "threads": str(threads or "llama.cpp's choice"),
                "load": f"{os.getloadavg()[0]:.1f}"}
        with LiveServer(create_app(config), start_timeout=300) as server, \
                openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=600) as client:
            _index_pages(Path(data))
            chosen = [q for i, q in enumerate(QUESTIONS, 1) if not only or i in only]
            results = []
            for number, question in enumerate(chosen, 1):
                result = ask(client, question, stream=stream)
                results.append(result)
                mark = ("ok " if result.correct else "-- ") + ("cited" if result.cited_page else
                                                                "cited, not the fact" if result.cited else "uncited")
                print(f"{number:2d}. [{mark}] {question.text}\n    → {result.answer!r} ({result.seconds:.1f}s)",
                      flush=True)
        return results, info


def _index_pages(data: Path) -> None:
    """Map each chunk's ``chorus://`` URL (the demo's docs have no URLs of their own) to its text."""
    import sqlite3

    db = sqlite3.connect(data / "knowledge.sqlite3")
    try:
        for dataset, file_id, idx, text in db.execute("SELECT dataset, file_id, idx, text FROM chunks"):
            CHUNKS[f"chorus://datasets/{dataset}/files/{file_id}/chunks/{idx}"] = text
    finally:
        db.close()


def summary(results: list[Result]) -> dict[str, float]:
    n = len(results) or 1
    return {
        "questions": len(results),
        "correct": sum(r.correct for r in results) / n,
        "cited": sum(r.cited for r in results) / n,
        "cited_page": sum(r.cited_page for r in results) / n,
        "correct_and_cited": sum(r.correct and r.cited for r in results) / n,
        "median_s": sorted(r.seconds for r in results)[len(results) // 2] if results else 0.0,
        "tuned_correct": _share([r for r in results if not r.question.held_out]),
        "held_out_correct": _share([r for r in results if r.question.held_out]),
        "held_out": sum(r.question.held_out for r in results),
    }


def _share(results: list[Result]) -> float:
    return sum(r.correct for r in results) / len(results) if results else 0.0


def table(results: list[Result]) -> str:
    rows = ["| # | question | answer | correct | cited (a cited source states the fact) |",
            "| --: | --- | --- | :-: | :-: |"]
    for i, r in enumerate(results, 1):
        answer = r.answer.replace("|", "\\|").replace("\n", " ")
        cited = "yes (yes)" if r.cited_page else "yes (no)" if r.cited else "no"
        held = " (held out)" if r.question.held_out else ""
        rows.append(f"| {i} | {r.question.text}{held} | {answer} | {'yes' if r.correct else 'no'} | {cited} |")
    return "\n".join(rows)


def write_doc(results: list[Result], info: dict[str, str], command: str) -> None:
    """The summary between the markers of ``docs/benchmarks.md``, every answer in :data:`ANSWERS`.

    The answers stay out of ``docs/``: the demo bot's dataset is ``docs/*.md``, and a table of its
    own (partly wrong) answers there would be retrieved as a source by the next run.
    """
    s = summary(results)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = (f"Run {when} on {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
           f"{info['provider']}, {info['threads']} thread(s); 1-minute load average {info['load']} at the start "
           f"(other work on the machine slows answers, not their content). Command: `{command}`.")
    result = (f"**{s['correct']:.0%} correct** ({round(s['correct'] * s['questions'])} of {s['questions']}), "
              f"**{s['cited']:.0%} cited** ({s['cited_page']:.0%} citing a source that states the fact), "
              f"{s['correct_and_cited']:.0%} both; median {s['median_s']:.1f} s per answer. Correct: "
              f"{s['tuned_correct']:.0%} of the first {s['questions'] - s['held_out']}, "
              f"{s['held_out_correct']:.0%} of the {s['held_out']} held out.")
    body = "\n".join([START_MARK, "", run, "", result + " Every question and answer: "
                       "[`benchmarks/demo_quality.md`](../benchmarks/demo_quality.md).", "", END_MARK])
    text = DOC.read_text(encoding="utf-8")
    if START_MARK in text:
        head, rest = text.split(START_MARK, 1)
        text = head + body + rest.split(END_MARK, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    DOC.write_text(text, encoding="utf-8")
    ANSWERS.write_text("\n".join([
        "# Demo answer quality: every answer", "",
        "Written by `benchmarks/demo_quality.py --write` (method and history: "
        "[docs/benchmarks.md](../docs/benchmarks.md#demo-answer-quality)). Kept out of `docs/` on purpose: "
        "the demo bot answers from `docs/*.md`, and these answers are partly wrong.", "",
        run, "", result, "", table(results), ""]), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (0: llama.cpp's choice)")
    parser.add_argument("--stream", action="store_true", help="ask with stream=true")
    parser.add_argument("--only", type=int, nargs="*", help="question numbers to ask (1-based)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a provider setting, e.g. --set prompt_style='\"chat\"'")
    parser.add_argument("--retrieval", type=json.loads, default={}, metavar="JSON",
                        help='override the demo bot\'s retrieval settings, e.g. \'{"top_k": 2}\'')
    parser.add_argument("--write", action="store_true", help="record the result in docs/benchmarks.md")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    results, info = serve_and_ask(args.threads or None, args.stream, args.only, overrides, args.retrieval)
    s = summary(results)
    print(f"\n{s['questions']} questions: {s['correct']:.0%} correct, {s['cited']:.0%} cited "
          f"({s['cited_page']:.0%} citing a source that states the fact), {s['correct_and_cited']:.0%} both; "
          f"median {s['median_s']:.1f} s; correct: {s['tuned_correct']:.0%} of the first "
          f"{s['questions'] - s['held_out']}, {s['held_out_correct']:.0%} of the {s['held_out']} held out")
    if args.write:
        write_doc(results, info, "python " + " ".join(["benchmarks/demo_quality.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
