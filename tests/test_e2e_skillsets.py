"""Skillsets end to end: server tools run by Chorus, hidden from the client, mixed with client tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY
from chorus.testing.gateway import serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream
from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec


class ProbeSettings(ToolSettings):
    barrier: int = 0


class ProbeTool(ToolDriver):
    """Test-only tools: echo, sleep, crash, refuse, and a barrier that proves concurrency."""

    settings_type = ProbeSettings
    settings: ProbeSettings

    def __init__(self, settings: ToolSettings, egress: Any) -> None:
        super().__init__(settings, egress)
        self._barrier: asyncio.Barrier | None = None

    def tools(self) -> list[ToolSpec]:
        params = {"type": "object", "properties": {"text": {"type": "string"}, "seconds": {"type": "number"}}}
        return [ToolSpec(name=self.settings.name, description=self.settings.description, parameters=params)]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        assert ctx.workspace == "acme" and ctx.bot == "agent" and ctx.request_id.startswith("req_")
        if name == "echo":
            return {"echo": arguments.get("text"), "workspace": ctx.workspace}
        if name == "sleep":
            await asyncio.sleep(float(arguments.get("seconds", 0)))
            return "slept"
        if name == "boom":
            raise RuntimeError("internal detail that must not leak")
        if name == "refuse":
            raise ToolError("order 42 does not exist")
        if name == "opaque":
            return object()  # not JSON: must become an error result, not a failed request
        if name == "meet":
            if self._barrier is None:
                self._barrier = asyncio.Barrier(self.settings.barrier)
            await asyncio.wait_for(self._barrier.wait(), 5)
            return "met"
        raise AssertionError(name)


SKILLSETS = """
[[skillsets]]
id = "probe"
workspace = "acme"
tool_timeout = 0.5
[[skillsets.tools]]
name = "echo"
driver = "probe"
description = "Echo text"
[[skillsets.tools]]
name = "sleep"
driver = "probe"
[[skillsets.tools]]
name = "boom"
driver = "probe"
[[skillsets.tools]]
name = "refuse"
driver = "probe"
[[skillsets.tools]]
name = "meet"
driver = "probe"
barrier = 2
[[skillsets.tools]]
name = "opaque"
driver = "probe"

[[skillsets]]
id = "foreign"
workspace = "globex"
[[skillsets.tools]]
name = "peek"
driver = "calculator"

[[bots]]
id = "spy"
workspace = "globex"
model = "up/gpt-test"
skillsets = ["foreign"]

[[bots]]
id = "agent"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are an agent."
skillsets = ["probe"]
max_tool_steps = 3
"""


@pytest.fixture(scope="module")
def agent_server(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with serve_with_plugins(upstream.base_url, extra=SKILLSETS, server_extra="keepalive_seconds = 0.1",
                            tools={"probe": ProbeTool}) as server:
        yield server


@pytest.fixture
def ac(agent_server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=agent_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=20) as sdk_client:
        yield sdk_client


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def tool_results(body: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


ASK = [{"role": "user", "content": "go"}]


def test_server_tools_are_offered_to_the_model(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    ac.chat.completions.create(model="bot/id=agent", messages=ASK)  # type: ignore[arg-type]
    names = [t["function"]["name"] for t in up.requests[-1].json["tools"]]
    assert names == ["echo", "sleep", "boom", "refuse", "meet", "opaque"]


def test_single_server_tool(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[call("c1", "echo", text="hi")]), Reply(content="Echoed."))
    completion = ac.chat.completions.create(model="bot/id=agent", messages=ASK)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Echoed."
    assert completion.choices[0].message.tool_calls is None
    assert completion.usage is not None and completion.usage.total_tokens == 30
    assert json.loads(tool_results(up.requests[-1].json)["c1"]) == {"echo": "hi", "workspace": "acme"}


def test_parallel_server_tools_run_concurrently(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    # Each "meet" call waits for the other at a barrier: run one after the other, both would time out.
    up.push(Reply(content=None, tool_calls=[call("m1", "meet"), call("m2", "meet")]), Reply(content="Both met."))
    completion = ac.chat.completions.create(model="bot/id=agent", messages=ASK)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Both met."
    assert tool_results(up.requests[-1].json) == {"m1": "met", "m2": "met"}


def test_tool_errors_and_timeouts_become_results(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    calls = [call("b", "boom"), call("r", "refuse"), call("s", "sleep", seconds=3), call("o", "opaque"),
             {"id": "j", "type": "function", "function": {"name": "echo", "arguments": "{oops"}}]
    up.push(Reply(content=None, tool_calls=calls), Reply(content="Handled."))
    completion = ac.chat.completions.create(model="bot/id=agent", messages=ASK)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Handled."
    results = tool_results(up.requests[-1].json)
    assert results["b"].startswith("Error: boom failed internally") and "internal detail" not in results["b"]
    assert results["r"] == "Error: order 42 does not exist"
    assert results["s"] == "Error: sleep timed out after 0.5 seconds."
    assert results["j"] == "Error: the arguments for echo are not valid JSON."
    assert results["o"].startswith("Error: opaque returned a result that cannot be shown")


def test_bot_step_limit(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(*[Reply(content=None, tool_calls=[call(f"e{i}", "echo", text=str(i))]) for i in range(4)], Reply(content="never"))
    completion = ac.chat.completions.create(model="bot/id=agent", messages=ASK)  # type: ignore[arg-type]
    assert len(up.requests) == 4  # 3 tool rounds (bot max_tool_steps), then a final call
    assert up.requests[-1].json["tool_choice"] == "none"
    # The model ignored tool_choice and called a server tool again: it is not shown to the client.
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


CLIENT_TOOL = {"type": "function", "function": {"name": "ask_user", "parameters": {"type": "object", "properties": {}}}}


def test_mixed_client_and_server_tools_resume(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[call("s1", "echo", text="x"), call("u1", "ask_user")]))
    first = ac.chat.completions.create(model="bot/id=agent", messages=ASK, tools=[CLIENT_TOOL])  # type: ignore[arg-type,list-item]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.id for c in choice.message.tool_calls or []] == ["u1"]
    # The client answers its own call; Chorus restores the hidden server step of that turn.
    up.push(Reply(content="Done."))
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call("u1", "ask_user")]},
               {"role": "tool", "tool_call_id": "u1", "content": "yes"}]
    second = ac.chat.completions.create(model="bot/id=agent", messages=history, tools=[CLIENT_TOOL])  # type: ignore[arg-type,list-item]
    assert second.choices[0].message.content == "Done."
    sent = up.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[2]["tool_calls"]] == ["s1", "u1"]
    assert sent[3]["tool_call_id"] == "s1" and json.loads(sent[3]["content"])["echo"] == "x"
    assert sent[4] == {"role": "tool", "content": "yes", "tool_call_id": "u1"}


def test_hidden_steps_then_client_call_resume(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[call("s9", "echo", text="y")]), Reply(content=None, tool_calls=[call("u9", "ask_user")]))
    first = ac.chat.completions.create(model="bot/id=agent", messages=ASK, tools=[CLIENT_TOOL], stream=True)  # type: ignore[arg-type,list-item]
    ids = [tc.id for chunk in first if chunk.choices for tc in chunk.choices[0].delta.tool_calls or [] if tc.id]
    assert ids == ["u9"]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call("u9", "ask_user")]},
               {"role": "tool", "tool_call_id": "u9", "content": "ok"}]
    ac.chat.completions.create(model="bot/id=agent", messages=history, tools=[CLIENT_TOOL])  # type: ignore[arg-type,list-item]
    sent = up.requests[-1].json["messages"]
    assert [(m["role"], m.get("tool_call_id") or [c["id"] for c in m.get("tool_calls", [])]) for m in sent[1:]] == [
        ("user", []), ("assistant", ["s9"]), ("tool", "s9"), ("assistant", ["u9"]), ("tool", "u9"),
    ]


def test_parked_turns_are_per_workspace(agent_server: LiveServer, up: ScriptedUpstream) -> None:
    from chorus.testing.config import GLOBEX_KEY

    up.push(Reply(content=None, tool_calls=[call("s5", "echo", text="z"), call("u5", "ask_user")]))
    with openai.OpenAI(base_url=agent_server.url + "/v1", api_key=ACME_KEY, max_retries=0) as acme:
        acme.chat.completions.create(model="bot/id=agent", messages=ASK, tools=[CLIENT_TOOL])  # type: ignore[arg-type,list-item]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call("u5", "ask_user")]},
               {"role": "tool", "tool_call_id": "u5", "content": "stolen?"}]
    with openai.OpenAI(base_url=agent_server.url + "/v1", api_key=GLOBEX_KEY, max_retries=0) as globex:
        # A globex bot with server tools (so parked turns are looked up) sends acme's call id back.
        globex.chat.completions.create(model="bot/id=spy", messages=history)  # type: ignore[arg-type]
    # Globex's copy of the call id restores nothing: acme's hidden step stays with acme.
    assert [m["role"] for m in up.requests[-1].json["messages"]] == ["user", "assistant", "tool"]
    assert [t["function"]["name"] for t in up.requests[-1].json["tools"]] == ["peek"]


def test_name_clash_server_tool_wins(ac: openai.OpenAI, up: ScriptedUpstream) -> None:
    clash = {"type": "function", "function": {"name": "echo", "description": "client echo", "parameters": {"type": "object"}}}
    ac.chat.completions.create(model="bot/id=agent", messages=ASK, tools=[clash])  # type: ignore[arg-type,list-item]
    echoes = [t for t in up.requests[-1].json["tools"] if t["function"]["name"] == "echo"]
    assert echoes == [{"type": "function", "function": {"name": "echo", "description": "Echo text", "parameters": echoes[0]["function"]["parameters"]}}]


def test_streaming_hides_steps_keeps_alive_and_sums_usage(agent_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[call("z1", "sleep", seconds=0.35)]), Reply(content="Rested well."))
    lines = _raw_lines(agent_server, {"model": "bot/id=agent", "messages": ASK, "stream": True,
                                      "stream_options": {"include_usage": True}})
    assert ": keep-alive" in lines
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert all("chorus" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Rested well."
    assert not any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30
    assert lines[-1] == "data: [DONE]"


def test_progress_events_are_opt_in(agent_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[call("p1", "echo", text="a")]), Reply(content="ok"))
    lines = _raw_lines(agent_server, {"model": "bot/id=agent", "messages": ASK, "stream": True}, headers={"x-chorus-progress": "true"})
    events = [json.loads(line[6:])["chorus"] for line in lines if line.startswith("data: {") and '"chorus"' in line]
    assert events == [{"type": "tool.started", "name": "echo", "step": 1}, {"type": "tool.finished", "name": "echo", "step": 1}]
    # The SDK still parses the stream (progress chunks have no choices).
    up.push(Reply(content=None, tool_calls=[call("p2", "echo", text="a")]), Reply(content="fine"))
    with openai.OpenAI(base_url=agent_server.url + "/v1", api_key=ACME_KEY, max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="bot/id=agent", messages=ASK, stream=True, extra_body={"chorus_progress": True}))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fine"
    assert "chorus_progress" not in up.requests[-1].json


def _raw_lines(server: LiveServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[str]:
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {ACME_KEY}", **(headers or {})}) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_models_list_shows_bot_tools(ac: openai.OpenAI) -> None:
    agent = ac.models.retrieve("bot/id=agent").model_dump()
    assert agent["capabilities"]["skillsets"] == ["probe"]
    assert agent["capabilities"]["server_tools"] == ["echo", "sleep", "boom", "refuse", "meet", "opaque"]


async def orders_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A loopback 'orders' service for the built-in http tool; checks the secret header."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = dict(scope["headers"])
    if headers.get(b"authorization") != b"Bearer orders-secret-token":
        body, status = b'{"error": "unauthorized"}', 401
    else:
        order_id = scope["path"].rsplit("/", 1)[-1]
        body, status = json.dumps({"order": order_id, "status": "shipped", "total": 19.5}).encode(), 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_issue_example_http_and_calculator_tools(upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with LiveServer(orders_app) as orders:
        extra = f"""
[[skillsets]]
id = "ops"
workspace = "acme"
egress_allow = ["127.0.0.1"]
[[skillsets.tools]]
name = "lookup_order"
driver = "http"
description = "Look up an order by its id"
method = "GET"
url = "http://127.0.0.1:{orders.port}/orders/{{order_id}}"
headers = {{ Authorization = "Bearer orders-secret-token" }}
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }}, required = ["order_id"] }}
[[skillsets.tools]]
name = "calc"
driver = "calculator"

[[bots]]
id = "ops-bot"
workspace = "acme"
model = "up/gpt-test"
skillsets = ["ops"]
"""
        upstream.reset()
        with serve_with_plugins(upstream.base_url, extra=extra) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=20)
            closing = client
            upstream.push(
                Reply(content=None, tool_calls=[call("o1", "lookup_order", order_id="A-17"), call("k1", "calc", expression="19.5 * 2")]),
                Reply(content="Order A-17 has shipped; two cost 39."),
            )
            completion = client.chat.completions.create(model="bot/id=ops-bot", messages=ASK)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == "Order A-17 has shipped; two cost 39."
            results = tool_results(upstream.requests[-1].json)
            assert "shipped" in results["o1"] and "A-17" in results["o1"]
            assert "orders-secret-token" not in json.dumps(upstream.requests[-1].json)
            assert json.loads(results["k1"]) == {"result": 39.0}
            closing.close()
        upstream.reset()


def test_a_resume_on_another_server_sharing_the_data_dir_restores_the_hidden_steps(
    upstream: ScriptedUpstream, up: ScriptedUpstream, tmp_path: Any,
) -> None:
    """What ``chorus serve --workers N`` relies on: workers share parked turns through the data dir."""
    shared = str(tmp_path)
    first_worker = serve_with_plugins(upstream.base_url, extra=SKILLSETS, tools={"probe": ProbeTool}, data_dir=shared)
    second_worker = serve_with_plugins(upstream.base_url, extra=SKILLSETS, tools={"probe": ProbeTool}, data_dir=shared)
    with first_worker, second_worker:
        up.push(Reply(content=None, tool_calls=[call("s7", "echo", text="w"), call("u7", "ask_user")]))
        with openai.OpenAI(base_url=first_worker.url + "/v1", api_key=ACME_KEY, max_retries=0) as one:
            stream = one.chat.completions.create(model="bot/id=agent", messages=ASK, tools=[CLIENT_TOOL], stream=True)  # type: ignore[arg-type,list-item]
            assert [tc.id for chunk in stream if chunk.choices for tc in chunk.choices[0].delta.tool_calls or []
                    if tc.id] == ["u7"]
        up.push(Reply(content="Done."))
        history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call("u7", "ask_user")]},
                   {"role": "tool", "tool_call_id": "u7", "content": "yes"}]
        with openai.OpenAI(base_url=second_worker.url + "/v1", api_key=ACME_KEY, max_retries=0) as two:
            answer = two.chat.completions.create(model="bot/id=agent", messages=history, tools=[CLIENT_TOOL])  # type: ignore[arg-type,list-item]
    assert answer.choices[0].message.content == "Done."
    sent = up.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[2]["tool_calls"]] == ["s7", "u7"]
    assert sent[3]["tool_call_id"] == "s7" and json.loads(sent[3]["content"])["echo"] == "w"
