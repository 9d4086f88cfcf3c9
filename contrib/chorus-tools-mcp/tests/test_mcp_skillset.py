"""The driver as Chorus loads it: entry point ``mcp`` in ``chorus.tools``, built into a skillset."""

from __future__ import annotations

import time
from importlib.metadata import entry_points

import pytest
from chorus_tools_mcp import McpTools
from mcp_testing import TOKEN, HttpServer, stdio_table, wait_until

from chorus.config import SkillsetConfig
from chorus.errors import ConfigError
from chorus.testing.gateway import build_skillsets, load_driver
from chorus.tools import ToolContext


def test_entry_point_is_registered() -> None:
    (entry,) = [ep for ep in entry_points(group="chorus.tools") if ep.name == "mcp"]
    assert entry.load() is McpTools
    assert load_driver("tools", "mcp", env={}) is McpTools


async def test_skillset_with_stdio_and_http_servers(http_server: HttpServer) -> None:
    config = SkillsetConfig(
        id="ops",
        workspace="acme",
        egress_allow=["127.0.0.1"],
        tools=[
            {"name": "local", "driver": "mcp", **stdio_table(tools=["add"], prefix="local_")},
            {
                "name": "remote",
                "driver": "mcp",
                "url": http_server.url,
                "headers": {"Authorization": f"Bearer {TOKEN}"},
                "tools": ["echo"],
                "prefix": "remote_",
            },
        ],
    )
    (skillset,) = build_skillsets([config], env={})
    await skillset.start()
    try:
        assert [spec.name for spec in skillset.specs()] == ["local_add", "remote_echo"]
        ctx = ToolContext(
            workspace="acme", bot="ops-bot", request_id="r1", deadline=time.monotonic() + 30, http=skillset.http
        )
        local, remote = skillset.owner("local_add"), skillset.owner("remote_echo")
        assert local is not None and remote is not None
        assert await local.call("local_add", {"a": 3, "b": 4}, ctx) == "7"
        assert await remote.call("remote_echo", {"text": "hi"}, ctx) == "hi"
    finally:
        await skillset.aclose()


def test_bad_table_is_a_config_error_naming_the_location() -> None:
    config = SkillsetConfig(id="ops", workspace="acme", tools=[{"name": "x", "driver": "mcp", "comand": ["srv"]}])
    with pytest.raises(ConfigError, match=r"skillsets\[0\]\.tools\[0\]: Object contains unknown field `comand`"):
        build_skillsets([config], env={})


async def test_a_skillset_offers_tools_the_server_adds_later() -> None:
    config = SkillsetConfig(id="ops", workspace="acme",
                            tools=[{"name": "local", "driver": "mcp", **stdio_table(prefix="l_")}])
    (skillset,) = build_skillsets([config], env={})
    await skillset.start()
    try:
        ctx = ToolContext(
            workspace="acme", bot="ops-bot", request_id="r1", deadline=time.monotonic() + 30, http=skillset.http
        )
        driver = skillset.owner("l_grow")
        assert driver is not None and skillset.owner("l_later") is None
        assert await driver.call("l_grow", {"name": "later"}, ctx) == "added"
        await wait_until(lambda: skillset.owner("l_later") is driver)
        assert "l_later" in [spec.name for spec in skillset.specs()]
        assert await driver.call("l_later", {"text": "x"}, ctx) == "later: x"
    finally:
        await skillset.aclose()
