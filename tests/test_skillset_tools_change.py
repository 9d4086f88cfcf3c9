"""A tool driver whose tool list changes at run time: the skillset follows it (ToolDriver.tools_changed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chorus.contract.config import SkillsetConfig
from chorus.contract.egress import EgressPolicy
from chorus.contract.errors import ConfigError
from chorus.contract.tools import ToolContext, ToolDriver, ToolSettings, ToolSpec
from chorus.runtime.skillsets import Skillset


class Shifting(ToolDriver):
    """Offers the tool names in ``offered``; a test edits the list and calls ``tools_changed()``."""

    def __init__(self, settings: ToolSettings, egress: EgressPolicy, offered: list[str]) -> None:
        super().__init__(settings, egress)
        self.offered = offered

    def tools(self) -> list[ToolSpec]:
        return [ToolSpec(name=name, description=f"{self.settings.name}'s {name}") for name in self.offered]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return f"{self.settings.name} ran {name}"


def skillset(*drivers: tuple[str, list[str]]) -> tuple[Skillset, list[Shifting]]:
    egress = EgressPolicy([])
    made = [Shifting(ToolSettings(name=name, driver="shifting"), egress, offered) for name, offered in drivers]
    return Skillset(SkillsetConfig(id="ops", workspace="acme"), list(made), egress), made


async def test_the_skillset_follows_a_drivers_changed_tools(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chorus.skillsets")
    ops, (first, _second) = skillset(("first", ["a", "b"]), ("second", ["c"]))
    await ops.start()
    try:
        assert [s.name for s in ops.specs()] == ["a", "b", "c"]
        first.offered = ["a", "d"]
        first.tools_changed()
        assert [s.name for s in ops.specs()] == ["a", "d", "c"]
        assert ops.owner("b") is None and ops.owner("d") is first
        assert "skillset ops: first changed its tools (added: d; removed: b)" in caplog.text
    finally:
        await ops.aclose()


async def test_a_clash_after_startup_is_logged_and_the_first_listed_keeps_the_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ops, (first, second) = skillset(("first", ["a"]), ("second", ["c"]))
    await ops.start()
    try:
        second.offered = ["c", "a"]
        second.tools_changed()
        assert [s.name for s in ops.specs()] == ["a", "c"]
        assert ops.owner("a") is first
        assert "tool a of second clashes with another tool of that name" in caplog.text
    finally:
        await ops.aclose()


async def test_a_clash_at_startup_is_still_a_configuration_error() -> None:
    ops, _ = skillset(("first", ["a"]), ("second", ["a"]))
    with pytest.raises(ConfigError, match="two tools are named 'a'"):
        await ops.start()
    await ops.aclose()


def test_listeners_work_without_the_base_initialiser() -> None:
    class Bare(ToolDriver):  # a third-party driver that never calls super().__init__()
        def __init__(self) -> None:
            pass

        def tools(self) -> list[ToolSpec]:
            return []

        async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
            return None

    seen: list[ToolDriver] = []
    driver = Bare()
    driver.tools_changed()  # nobody watches yet: nothing happens
    driver.watch_tools(seen.append)
    driver.tools_changed()
    assert seen == [driver]
