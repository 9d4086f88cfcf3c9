"""chorus.testing's end-to-end kit: the fixtures, the gateway helpers and LiveServer, as a plugin suite uses them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chorus import hookimpl
from chorus.config import SkillsetConfig
from chorus.errors import ConfigError, PluginError
from chorus.testing.config import ACME_KEY, GLOBEX_KEY, UPSTREAM_SECRET, make_config
from chorus.testing.fixtures import ServeChorus
from chorus.testing.gateway import build_skillsets, load_driver, make_app, serve_with_plugins
from chorus.testing.server import LiveServer, free_port
from chorus.testing.upstream import Reply, ScriptedUpstream
from chorus.tools import ToolContext, ToolDriver, ToolSpec

USER: Any = [{"role": "user", "content": "hi"}]


class Policy:
    """A hook plugin with no entry point."""

    @hookimpl
    def build_system_prompt(self, ctx: Any) -> str:
        return "Always answer in French."


class EchoTool(ToolDriver):
    """A tool driver with no entry point."""

    def tools(self) -> list[ToolSpec]:
        params = {"type": "object", "properties": {"text": {"type": "string"}}}
        return [ToolSpec(name=self.settings.name, description="Echo the text.", parameters=params)]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return f"echo: {arguments['text']}"


ECHO_BOT = """
[[skillsets]]
id = "echoes"
workspace = "acme"
[[skillsets.tools]]
name = "echo"
driver = "echo"

[[bots]]
id = "echobot"
workspace = "acme"
model = "up/gpt-test"
skillsets = ["echoes"]
"""


def test_serve_chorus_serves_the_test_configuration(scripted_upstream: ScriptedUpstream,
                                                    serve_chorus: ServeChorus) -> None:
    server = serve_chorus()
    assert server.started and server.base_url == server.url + "/v1"
    scripted_upstream.push(Reply("Hello there", chunk_delay=0.001))
    with server.openai_client(ACME_KEY) as acme, server.openai_client(GLOBEX_KEY) as globex:
        assert "bot/id=support" in {m.id for m in acme.models.list()}
        assert "bot/id=rival" in {m.id for m in globex.models.list()}
        chunks = list(acme.chat.completions.create(model="bot/id=support", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there"
    assert scripted_upstream.wait_streams_completed(1)
    (request,) = scripted_upstream.requests
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert request.json["model"] == "gpt-test"


def test_serve_chorus_adds_plugins_and_drivers(scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus) -> None:
    server = serve_chorus(ECHO_BOT, Policy(), tools={"echo": EchoTool})
    call = {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "ping"}'}}
    scripted_upstream.push(Reply(content=None, tool_calls=[call]), Reply("done"))
    with server.openai_client(ACME_KEY) as client:
        completion = client.chat.completions.create(model="bot/id=echobot", messages=USER)
    assert completion.choices[0].message.content == "done"
    first, second = scripted_upstream.requests
    assert "Always answer in French." in first.json["messages"][0]["content"]
    assert second.json["messages"][-1] == {"role": "tool", "content": "echo: ping", "tool_call_id": "c1"}


def test_serve_chorus_restarts_on_the_same_data(scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus,
                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_chorus(data_dir=data) as first, first.openai_client(ACME_KEY) as client:
        file = client.files.create(file=("notes.txt", b"Opening hours: 8 to 6."), purpose="assistants")
    assert not first.started
    with serve_chorus(data_dir=data) as second, second.openai_client(ACME_KEY) as client:
        assert client.files.retrieve(file.id).filename == "notes.txt"


def test_serve_chorus_takes_a_ready_config(scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus,
                                           tmp_path: Path) -> None:
    config = make_config(scripted_upstream.base_url, data_dir=str(tmp_path))
    with serve_chorus(config).openai_client(ACME_KEY) as client:
        assert client.chat.completions.create(model="model/name=up/gpt-test", messages=USER).choices[0].message.content == "ok"
    with pytest.raises(TypeError, match="apply to TOML"):
        serve_chorus(config, server_extra="max_body_bytes = 10")


def test_serve_with_plugins_and_live_server_lifecycle() -> None:
    with ScriptedUpstream() as upstream:
        server = serve_with_plugins(upstream.base_url, Policy())
        assert not server.started
        with server, server.openai_client(ACME_KEY) as client:
            assert server.__enter__() is server  # entering a started server just returns it
            client.chat.completions.create(model="bot/id=support", messages=USER)
        assert "Always answer in French." in upstream.requests[0].json["messages"][0]["content"]
        server.stop()  # a second stop is a no-op
        with pytest.raises(RuntimeError, match="make a new one"):
            server.start()
        with LiveServer(make_app(make_config(upstream.base_url))) as again:
            assert again.started


def test_make_config_refuses_bad_toml_like_chorus_serve() -> None:
    with pytest.raises(ConfigError, match="nobody"):
        make_config(f"http://127.0.0.1:{free_port()}/v1", '[[bots]]\nid = "x"\nworkspace = "nobody"\nmodel = "up/m"\n')


def test_load_driver() -> None:
    assert load_driver("tools", "calculator", env={}).__name__ == "CalculatorTool"
    with pytest.raises(PluginError, match=r"no tools driver named 'nope' is installed"):
        load_driver("tools", "nope", env={})
    with pytest.raises(PluginError, match=r"no tools driver named 'calculator'"):
        load_driver("tools", "calculator", env={"CHORUS_DISABLE_PLUGINS": "calculator"})


async def test_build_skillsets() -> None:
    config = SkillsetConfig(id="s", workspace="acme", tools=[{"name": "echo", "driver": "echo"},
                                                             {"name": "calc", "driver": "calculator"}])
    (skillset,) = build_skillsets([config], tools={"echo": EchoTool}, env={})
    await skillset.start()
    try:
        assert [spec.name for spec in skillset.specs()] == ["echo", "calc"]
        ctx = ToolContext(workspace="acme", bot="b", request_id="r1", deadline=time.monotonic() + 5, http=skillset.http)
        echo = skillset.owner("echo")
        assert echo is not None and await echo.call("echo", {"text": "x"}, ctx) == "echo: x"
    finally:
        await skillset.aclose()
    bad = SkillsetConfig(id="s", workspace="acme", tools=[{"name": "e", "driver": "nope"}])
    with pytest.raises(ConfigError, match=r"^skillsets\[0\]\.tools\[0\]: no tools driver named 'nope'"):
        build_skillsets([bad], env={})
