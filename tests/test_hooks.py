"""A test plugin that implements every hook, driven end to end through a live Chorus.

``test_meta.py`` fails when a hook has no ``test_hook_<name>`` here or no entry in docs/hooks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chorus import hookimpl
from chorus.contract.context import RequestContext, Source
from chorus.contract.errors import PluginError
from chorus.contract.fields import RequestField
from chorus.plugins.manager import PluginManager
from chorus.registry import Registry, Workspace
from chorus.runtime.pipeline import declared_fields
from chorus.targets import Target
from chorus.testing.config import ACME_KEY
from chorus.testing.gateway import serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

CLOCK = {
    "type": "function",
    "function": {"name": "server_clock", "description": "Current time", "parameters": {"type": "object", "properties": {}}},
}


class EveryHook:
    """Implements every hook; async where the contract allows it."""

    @hookimpl
    def request_fields(self) -> list[RequestField]:
        return [RequestField(name="echo_tag", type=str | None, doc="a tag the echo target repeats")]

    @hookimpl
    def resolve_target(self, selector: str, workspace: Workspace, registry: Registry) -> Target | None:
        if selector == "echo/fixed":
            return Target(selector=selector, kind="echo", provider=registry.providers["up"], model="echo-upstream")
        return None

    @hookimpl
    async def build_system_prompt(self, ctx: RequestContext) -> list[str] | None:
        assert ctx.target is not None
        if ctx.target.kind == "echo":
            tag = ctx.field("echo_tag")
            return ["Echo plugin instructions.", *([f"Tag: {tag}"] if tag else [])]
        return ["Plugin part one.", "Plugin part two."] if ctx.target.bot else None

    @hookimpl
    async def retrieve_context(self, ctx: RequestContext) -> list[Source] | None:
        assert ctx.target is not None
        if ctx.target.bot is None:
            return None
        return [Source(text="Orders ship in 2 days.", title="Shipping", url="https://acme.test/shipping")]

    @hookimpl
    def list_tools(self, ctx: RequestContext) -> list[dict[str, Any]] | None:
        assert ctx.target is not None
        return [CLOCK] if ctx.target.bot else None

    @hookimpl
    async def run_tools(self, ctx: RequestContext, tool_calls: list[dict[str, Any]]) -> dict[str, str]:
        return {c["id"]: "12:00" for c in tool_calls if c["function"]["name"] == "server_clock"}

    @hookimpl
    def post_process(self, ctx: RequestContext, payload: dict[str, Any], chunk: bool) -> None:
        for choice in payload.get("choices") or []:
            if chunk:
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    delta["content"] = delta["content"].replace("secret", "******")
            else:
                message = choice.get("message") or {}
                if isinstance(message.get("content"), str):
                    message["content"] = message["content"].replace("secret", "******")


@pytest.fixture(scope="module")
def hooked(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with serve_with_plugins(upstream.base_url, EveryHook()) as server:
        yield server


@pytest.fixture
def hc(hooked: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=hooked.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=20) as sdk_client:
        yield sdk_client


def test_hook_resolve_target(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    completion = hc.chat.completions.create(model="echo/fixed", messages=[{"role": "user", "content": "x"}])
    assert completion.model == "echo/fixed"
    assert up.requests[-1].json["model"] == "echo-upstream"
    with pytest.raises(openai.NotFoundError):
        hc.chat.completions.create(model="echo/other", messages=[{"role": "user", "content": "x"}])


def test_async_resolve_target_is_rejected() -> None:
    class AsyncResolver:
        @hookimpl
        async def resolve_target(self, selector: str) -> None:
            return None

    pm = PluginManager()
    with pytest.raises(PluginError, match="must be synchronous"):
        pm.register(AsyncResolver(), name="bad")
    assert pm.hooks_of("bad") == []


def test_hook_request_fields(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    hc.chat.completions.create(model="echo/fixed", messages=[{"role": "user", "content": "x"}], extra_body={"echo_tag": "blue"})
    sent = up.requests[-1].json
    assert "echo_tag" not in sent  # a plugin's field is read by hooks, never forwarded
    assert sent["messages"][0] == {"role": "system", "content": "Echo plugin instructions.\n\nTag: blue"}
    with pytest.raises(openai.BadRequestError) as info:
        hc.chat.completions.create(model="echo/fixed", messages=[{"role": "user", "content": "x"}], extra_body={"echo_tag": 5})
    assert info.value.body["param"] == "echo_tag"  # type: ignore[index]


def test_request_fields_must_not_clash() -> None:
    class Mapped:
        @hookimpl
        def request_fields(self) -> list[RequestField]:
            return [RequestField(name="temperature", type=float)]

    class Twice:
        @hookimpl
        def request_fields(self) -> list[RequestField]:
            return [RequestField(name="web_search_options", type=dict[str, Any] | None)]

    pm = PluginManager()
    pm.register(Mapped(), name="mapped")
    with pytest.raises(PluginError, match="'mapped' declares request field 'temperature', which Chorus already maps"):
        declared_fields(pm)
    pm.unregister("mapped")
    pm.register(Twice(), name="twice")
    with pytest.raises(PluginError, match="plugins 'twice' and 'websearch' both declare request field 'web_search_options'"):
        declared_fields(pm)


def test_async_request_fields_is_rejected() -> None:
    class AsyncFields:
        @hookimpl
        async def request_fields(self) -> list[RequestField]:
            return []

    with pytest.raises(PluginError, match="request_fields must be synchronous"):
        PluginManager().register(AsyncFields(), name="bad")


def test_hook_build_system_prompt(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    hc.chat.completions.create(
        model="bot/id=support", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    )
    system = up.requests[-1].json["messages"][0]
    assert system["role"] == "system"
    layers = system["content"].split("\n\n")
    assert layers[0] == "You are Ada, Acme's support agent."
    assert layers[1:3] == ["Plugin part one.", "Plugin part two."]
    assert layers[-1] == "Be brief."
    # For a plain-model target plugin parts form a leading system message; request messages follow as sent.
    hc.chat.completions.create(model="echo/fixed", messages=[{"role": "system", "content": "Mine."}, {"role": "user", "content": "q"}])
    assert up.requests[-1].json["messages"] == [
        {"role": "system", "content": "Echo plugin instructions."},
        {"role": "system", "content": "Mine."},
        {"role": "user", "content": "q"},
    ]


def test_hook_retrieve_context(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    hc.chat.completions.create(model="bot/id=support", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}])
    content = up.requests[-1].json["messages"][0]["content"]
    sources_at = content.index("Sources (")
    assert content.index("Plugin part two.") < sources_at < content.index("Be brief.")
    assert "[1] Shipping (https://acme.test/shipping)\nOrders ship in 2 days." in content


def test_hook_list_tools(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    client_tool = {"type": "function", "function": {"name": "client_side", "parameters": {"type": "object"}}}
    hc.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "q"}], tools=[client_tool])  # type: ignore[list-item]
    assert up.requests[-1].json["tools"] == [client_tool, CLOCK]
    hc.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "q"}])
    assert "tools" not in up.requests[-1].json


SERVER_CALL = [{"id": "call_clock", "type": "function", "function": {"name": "server_clock", "arguments": "{}"}}]


def test_hook_run_tools(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=SERVER_CALL), Reply(content="It is 12:00."))
    completion = hc.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "time?"}])
    assert completion.choices[0].message.content == "It is 12:00."
    assert completion.choices[0].finish_reason == "stop"
    assert not completion.choices[0].message.tool_calls
    assert completion.usage is not None and completion.usage.total_tokens == 30
    second = up.requests[-1].json["messages"]
    assert second[-2] == {"role": "assistant", "content": None, "tool_calls": SERVER_CALL}
    assert second[-1] == {"role": "tool", "content": "12:00", "tool_call_id": "call_clock"}


def test_hook_run_tools_streaming_hides_server_steps(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=SERVER_CALL), Reply(content="It is 12:00 now."))
    chunks = list(hc.chat.completions.create(
        model="bot/id=support", messages=[{"role": "user", "content": "time?"}], stream=True,
        stream_options={"include_usage": True},
    ))
    choice_chunks = [c for c in chunks if c.choices]
    assert all(not c.choices[0].delta.tool_calls for c in choice_chunks)
    assert "".join(c.choices[0].delta.content or "" for c in choice_chunks) == "It is 12:00 now."
    assert [c.choices[0].finish_reason for c in choice_chunks if c.choices[0].finish_reason] == ["stop"]
    assert sum(1 for c in choice_chunks if c.choices[0].delta.role) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30


def test_unhandled_tool_calls_reach_the_client(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    call = [{"id": "call_c", "type": "function", "function": {"name": "client_side", "arguments": "{}"}}]
    up.push(Reply(content=None, tool_calls=call))
    completion = hc.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "q"}])
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].id == "call_c"  # type: ignore[index]
    up.push(Reply(content=None, tool_calls=call))
    chunks = list(hc.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "q"}], stream=True))
    names = [tc.function.name for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or [] if tc.function and tc.function.name]
    assert names == ["client_side"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_hook_post_process(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="the secret is out"))
    completion = hc.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "q"}])
    assert completion.choices[0].message.content == "the ****** is out"
    up.push(Reply(content="a secret again"))
    chunks = list(hc.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "q"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a ****** again"


def test_server_tool_step_limit(hc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(*[Reply(content=None, tool_calls=SERVER_CALL) for _ in range(8)], Reply(content="Stopping here."))
    completion = hc.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "loop"}])
    # After max_tool_steps (8) tool rounds the model is called once more with tool_choice "none".
    assert len(up.requests) == 9
    assert [r.json.get("tool_choice") for r in up.requests] == [None] * 8 + ["none"]
    assert completion.choices[0].message.content == "Stopping here."
    assert completion.usage is not None and completion.usage.total_tokens == 9 * 15
