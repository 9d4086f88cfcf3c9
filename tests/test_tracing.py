"""OpenTelemetry traces end to end: the span tree of a bot with a dataset and a server tool, team
members, GenAI attribute names, ``traceparent`` in and out, content only when configured, off by
default, and a real OTLP/HTTP export to a stand-in collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from chorus.app import create_app
from chorus.runtime import tracing
from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.otlp import OtlpCollector
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

KB = Path(__file__).parent / "data" / "kb"
PROMPT = "How long does delivery to Europe take?"
SYSTEM = "Answer briefly. canary9d1e"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

BOTS = f"""
[[datasets]]
id = "handbook"
workspace = "acme"
sources = ["{KB}/*.md", "{KB}/*.txt"]

[[skillsets]]
id = "maths"
workspace = "acme"
[[skillsets.tools]]
name = "calc"
driver = "calculator"

[[bots]]
id = "clerk"
workspace = "acme"
name = "Clerk"
model = "up/gpt-test"
datasets = ["handbook"]
skillsets = ["maths"]

[[bots]]
id = "lead"
workspace = "acme"
model = "up/gpt-test"
team = ["clerk"]
"""

CALC = {"id": "call_calc", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "7*2"}'}}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def serve_traced(upstream: ScriptedUpstream, exporter: InMemorySpanExporter, extra: str = "") -> LiveServer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return LiveServer(create_app(make_config(upstream.base_url, BOTS + extra), tracer_provider=provider))


def ask(server: LiveServer, model: str, stream: bool = False, **headers: str) -> httpx.Response:
    response = httpx.post(server.base_url + "/chat/completions", timeout=30, headers={
        "authorization": f"Bearer {ACME_KEY}", **headers,
    }, json={"model": model, "stream": stream, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]})
    assert response.status_code == 200, response.text
    return response


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def traced(scripted_upstream: ScriptedUpstream, exporter: InMemorySpanExporter) -> Iterator[LiveServer]:
    with serve_traced(scripted_upstream, exporter) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_a_bot_with_a_dataset_and_a_tool(traced: LiveServer, scripted_upstream: ScriptedUpstream,
                                         exporter: InMemorySpanExporter, stream: bool) -> None:
    scripted_upstream.push(
        Reply(content=None, tool_calls=[CALC], usage={"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45}),
        Reply("Seven business days [1].", usage={"prompt_tokens": 60, "completion_tokens": 6, "total_tokens": 66}),
    )
    ask(traced, "bot/id=clerk", stream=stream, traceparent=TRACEPARENT)
    spans = exporter.get_finished_spans()
    names = by_name(spans)
    (server,) = names["chat bot/id=clerk"]
    (retrieval,) = names["retrieval"]
    calls = names["chat gpt-test"]
    (tool,) = names["execute_tool calc"]
    assert len(spans) == 5 and len(calls) == 2

    # the caller's trace continues: the server span is the child of the incoming traceparent
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(parent_of(server) or 0, "016x") == PARENT_ID
    assert server.kind is SpanKind.SERVER
    assert all(s.context.trace_id == server.context.trace_id for s in spans)
    assert {parent_of(s) for s in (retrieval, tool, *calls)} == {server.context.span_id}
    assert [s.kind for s in calls] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert calls[0].start_time < tool.start_time < calls[1].start_time

    a = attrs(server)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "bot/id=clerk"
    assert a["gen_ai.response.model"] == "gpt-test"
    assert a["gen_ai.provider.name"] == "up"
    assert a["gen_ai.agent.id"] == "clerk"
    assert a["gen_ai.usage.input_tokens"] == 100 and a["gen_ai.usage.output_tokens"] == 11
    assert a["http.response.status_code"] == 200 and a["chorus.target.kind"] == "bot"
    assert a["chorus.workspace"] == "acme" and a["chorus.tool_calls"] == 1 and a["chorus.upstream_calls"] == 2
    assert str(a["chorus.request_id"]).startswith("req_")

    first = attrs(calls[0])
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.request.model"] == "gpt-test"
    assert first["gen_ai.provider.name"] == "up" and first["gen_ai.response.model"] == "gpt-test"
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (40, 5)
    assert attrs(tool) == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "calc",
                           "gen_ai.tool.call.id": "call_calc", "chorus.skillset": "maths"}
    assert attrs(retrieval)["chorus.datasets"] == ("handbook",) and attrs(retrieval)["chorus.retrieval.hits"] >= 1

    # each upstream call carried its own client span as traceparent
    sent = [r.headers.get("traceparent") for r in scripted_upstream.requests[-2:]]
    assert sent == [f"00-{TRACE_ID}-{format(c.context.span_id, '016x')}-01" for c in calls]

    # no content on any span by default
    for span in spans:
        assert not any("canary" in str(v) or "Seven" in str(v) or "Europe" in str(v) for v in attrs(span).values())


def test_team_members_are_child_spans_with_their_own_steps(traced: LiveServer, scripted_upstream: ScriptedUpstream,
                                                           exporter: InMemorySpanExporter) -> None:
    ask_clerk = {"id": "call_ask", "type": "function",
                 "function": {"name": "ask_clerk", "arguments": '{"task": "shipping time to Europe?"}'}}
    scripted_upstream.push(
        Reply(content=None, tool_calls=[ask_clerk], usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}),
        Reply("Seven business days.", usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}),  # clerk
        Reply("The clerk says seven.", usage={"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}),
    )
    ask(traced, "bot/id=lead")
    names = by_name(exporter.get_finished_spans())
    (server,) = names["chat bot/id=lead"]
    (member,) = names["invoke_agent clerk"]
    (retrieval,) = names["retrieval"]
    calls = names["chat gpt-test"]
    assert parent_of(server) is None  # no incoming traceparent: a new trace
    assert parent_of(member) == server.context.span_id
    assert parent_of(retrieval) == member.context.span_id  # the member's own retrieval
    assert sorted(parent_of(c) == member.context.span_id for c in calls) == [False, False, True]
    m = attrs(member)
    assert m["gen_ai.operation.name"] == "invoke_agent" and m["gen_ai.agent.id"] == "clerk"
    assert (m["gen_ai.usage.input_tokens"], m["gen_ai.usage.output_tokens"]) == (20, 3)
    s = attrs(server)
    assert (s["gen_ai.usage.input_tokens"], s["gen_ai.usage.output_tokens"]) == (60, 9)  # members included
    assert s["chorus.upstream_calls"] == 3


def test_content_is_recorded_only_when_configured(scripted_upstream: ScriptedUpstream,
                                                  exporter: InMemorySpanExporter) -> None:
    with serve_traced(scripted_upstream, exporter, "\n[tracing]\nrecord_content = true\n") as server:
        scripted_upstream.push(Reply(content=None, tool_calls=[CALC]), Reply("Fourteen."))
        ask(server, "bot/id=clerk")
    names = by_name(exporter.get_finished_spans())
    first = attrs(names["chat gpt-test"][0])
    assert "canary9d1e" in first["gen_ai.input.messages"]
    tool = attrs(names["execute_tool calc"][0])
    assert tool["gen_ai.tool.call.arguments"] == '{"expression": "7*2"}' and "14" in tool["gen_ai.tool.call.result"]


def test_tracing_is_off_by_default(scripted_upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    app = create_app(make_config(scripted_upstream.base_url, BOTS))
    assert app.state.observer.tracing is None
    with LiveServer(app) as server:
        scripted_upstream.push(Reply("hi"))
        ask(server, "model/name=up/gpt-test", traceparent=TRACEPARENT)
    assert "traceparent" not in scripted_upstream.requests[-1].headers


def test_the_otel_environment_decides() -> None:
    assert not tracing.enabled({})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing.enabled({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not tracing.enabled({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.provider_from_env({}) is None


def test_spans_are_exported_over_otlp_http(scripted_upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpCollector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        app = create_app(make_config(scripted_upstream.base_url, BOTS))
        assert app.state.observer.tracing is not None
        with LiveServer(app) as server:
            scripted_upstream.push(Reply("hi"))
            ask(server, "model/name=up/gpt-test")
        # stopping the server shut the provider down, which flushed the batch
        assert collector.exports and all(path == "/v1/traces" and kind == "application/x-protobuf"
                                         for path, kind, _ in collector.exports)
        assert any(b"chat model/name=up/gpt-test" in body and b"gen_ai.usage.input_tokens" in body
                   for body in collector.bodies)
    assert "traceparent" in scripted_upstream.requests[-1].headers


def test_nothing_of_opentelemetry_is_imported_when_off(tmp_path: Path) -> None:
    """Off means free: serving a request without the OTEL_* environment never imports the OpenTelemetry
    API, SDK or exporters (redis may import the semantic-convention constants; they are inert)."""
    import os
    import subprocess
    import sys

    code = """
import sys, httpx
from chorus.app import create_app
from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.server import LiveServer
from chorus.testing.upstream import ScriptedUpstream
with ScriptedUpstream() as up, LiveServer(create_app(make_config(up.base_url))) as server:
    r = httpx.post(server.base_url + "/chat/completions", headers={"authorization": "Bearer " + ACME_KEY},
                   json={"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.trace", "opentelemetry.sdk", "opentelemetry.context",
                                                   "opentelemetry.exporter", "opentelemetry.propagate"))))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unsampled_requests_record_nothing_but_keep_the_trace_context(scripted_upstream: ScriptedUpstream,
                                                                      exporter: InMemorySpanExporter) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with LiveServer(create_app(make_config(scripted_upstream.base_url, BOTS), tracer_provider=provider)) as server:
        scripted_upstream.push(Reply(content=None, tool_calls=[CALC]), Reply("Fourteen."))
        ask(server, "bot/id=clerk", traceparent=TRACEPARENT)
    assert exporter.get_finished_spans() == ()
    sent = scripted_upstream.requests[-1].headers["traceparent"]
    assert sent.startswith(f"00-{TRACE_ID}-") and sent.endswith("-00")  # the caller's trace, not sampled
