"""The driver against the real test server spawned over stdio."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from chorus_tools_mcp import McpStartError, McpTools
from mcp_testing import process_state, processes_with, stdio_table, wait_until

from chorus.tools import ToolContext, ToolError

Drivers = Callable[..., McpTools]
Ctx = Callable[..., ToolContext]


async def test_lists_allow_listed_tools_with_prefix(drivers: Drivers) -> None:
    driver = drivers(**stdio_table(tools=["add", "echo"], prefix="calc_"))
    await driver.start()
    specs = {spec.name: spec for spec in driver.tools()}
    assert sorted(specs) == ["calc_add", "calc_echo"]
    add = specs["calc_add"]
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["required"] == ["a", "b"]
    assert add.definition()["function"]["name"] == "calc_add"


async def test_without_allow_list_every_tool_is_exposed(drivers: Drivers) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    names = {spec.name for spec in driver.tools()}
    assert {"add", "echo", "fail", "slow", "pid", "crash", "picture", "stats"} <= names


async def test_allow_list_naming_a_missing_tool_fails_start(drivers: Drivers) -> None:
    driver = drivers(**stdio_table(tools=["add", "subtract"]))
    with pytest.raises(McpStartError, match=r"has no tool named subtract"):
        await driver.start()


async def test_calls_return_text_structured_content_and_placeholders(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table(prefix="t_"))
    await driver.start()
    assert await driver.call("t_add", {"a": 2, "b": 40}, ctx()) == "42"
    assert await driver.call("t_echo", {"text": "héllo\nworld"}, ctx()) == "héllo\nworld"
    # Text content wins over the structured duplicate.
    assert await driver.call("t_stats", {"values": [1, 2.5]}, ctx()) == '{\n  "count": 2,\n  "sum": 3.5\n}'
    picture = await driver.call("t_picture", {}, ctx())
    assert picture.startswith("[image: image/png, ") and picture.endswith(" bytes, not shown]")


async def test_concurrent_calls_share_the_session(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    results = await asyncio.gather(*(driver.call("add", {"a": i, "b": i}, ctx()) for i in range(20)))
    assert results == [str(2 * i) for i in range(20)]
    pids = await asyncio.gather(*(driver.call("pid", {}, ctx()) for _ in range(3)))
    assert len(set(pids)) == 1


async def test_error_results_raise_tool_error_with_their_text(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    with pytest.raises(ToolError, match=r"order 7 does not exist$"):
        await driver.call("fail", {"reason": "order 7 does not exist"}, ctx())
    with pytest.raises(ToolError, match=r"validation error"):
        await driver.call("add", {"a": "x"}, ctx())
    with pytest.raises(ToolError, match=r"unknown tool 'nope'"):
        await driver.call("nope", {}, ctx())


async def test_timeout_cancels_the_call_and_the_session_survives(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table(timeout=0.5))
    await driver.start()
    with pytest.raises(ToolError, match=r"slow did not finish within 0.5s"):  # it would finish after 10 s
        await driver.call("slow", {"seconds": 10}, ctx())
    assert await driver.call("add", {"a": 1, "b": 1}, ctx()) == "2"


async def test_deadline_bounds_the_timeout(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table(timeout=60))
    await driver.start()
    with pytest.raises(ToolError, match=r"did not finish within 0\.[45]\d*s"):  # the deadline, not the 60 s timeout
        await driver.call("slow", {"seconds": 10}, ctx(seconds=0.5))
    with pytest.raises(ToolError, match=r"no time was left"):
        await driver.call("add", {"a": 1, "b": 1}, ctx(seconds=-1))


async def test_env_cwd_and_no_inherited_environment(
    drivers: Drivers, ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_GATEWAY_SECRET", "gateway-only")
    driver = drivers(
        **stdio_table(env={"SERVER_TOKEN": "s3rver-t0ken-value", "MODE": "verbose-mode"}, cwd=str(tmp_path))
    )
    await driver.start()
    assert await driver.call("env", {"name": "MODE"}, ctx()) == "verbose-mode"
    # The server received the secret; the model sees it masked.
    assert await driver.call("env", {"name": "SERVER_TOKEN"}, ctx()) == "***"
    assert await driver.call("env", {"name": "CHORUS_GATEWAY_SECRET"}, ctx()) == ""
    assert Path(await driver.call("cwd", {}, ctx())) == tmp_path


async def test_stderr_is_logged_with_secrets_masked(
    drivers: Drivers, ctx: Ctx, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chorus.tools.mcp")
    driver = drivers(**stdio_table(env={"SERVER_TOKEN": "s3rver-t0ken-value"}))
    await driver.start()
    await driver.call("shout", {"text": "token is s3rver-t0ken-value"}, ctx())
    await wait_until(lambda: "mcp test-mcp stderr: token is ***" in caplog.text, seconds=5)
    assert "s3rver-t0ken-value" not in caplog.text


async def test_aclose_stops_the_server_without_a_zombie(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    pid = await driver.call("pid", {}, ctx())
    assert process_state(int(pid)) not in (None, "Z")
    await driver.aclose()
    assert process_state(int(pid)) is None
    # The stderr pump thread ends with the process.
    await wait_until(lambda: not [t for t in threading.enumerate() if t.name == "mcp-stderr-test-mcp"])
    with pytest.raises(ToolError, match=r"shut down"):
        await driver.call("pid", {}, ctx())


async def test_server_killed_between_calls_is_restarted_on_the_next_call(
    drivers: Drivers, ctx: Ctx, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="chorus.tools.mcp")
    driver = drivers(**stdio_table())
    await driver.start()
    first = int(await driver.call("pid", {}, ctx()))
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: process_state(first) is None)
    # "Between calls": the driver has seen the session end (a call racing the death fails instead,
    # as test_server_dying_during_a_call_fails_it_then_reconnects shows).
    await wait_until(lambda: "session ended" in caplog.text, 30)
    second = int(await driver.call("pid", {}, ctx()))
    assert second != first
    assert await driver.call("add", {"a": 1, "b": 2}, ctx()) == "3"


async def test_server_dying_during_a_call_fails_it_then_reconnects(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    first = int(await driver.call("pid", {}, ctx()))
    with pytest.raises(ToolError, match=r"session ended during the call .*the next call reconnects"):
        await driver.call("crash", {}, ctx())
    second = int(await driver.call("pid", {}, ctx()))
    assert second != first
    await wait_until(lambda: process_state(first) is None)


async def test_failed_reconnect_is_a_tool_error(drivers: Drivers, ctx: Ctx, tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(Path(__file__).with_name("mcp_server.py").read_text())
    driver = drivers(command=[sys.executable, str(script)], startup_timeout=5)
    await driver.start()
    script.write_text("import sys; sys.exit(7)\n")  # the next spawn fails
    with pytest.raises(ToolError):
        await driver.call("crash", {}, ctx())
    with pytest.raises(ToolError, match=r"the MCP server is unavailable: .*"):
        await driver.call("pid", {}, ctx())


async def test_start_fails_clearly_for_a_missing_program(drivers: Drivers) -> None:
    driver = drivers(command=["/nonexistent/mcp-server-binary"])
    expected = r"MCP server 'test-mcp' \(stdio /nonexistent/mcp-server-binary\) could not start: .*No such file"
    with pytest.raises(McpStartError, match=expected):
        await driver.start()


async def test_start_fails_when_the_server_exits(drivers: Drivers) -> None:
    driver = drivers(command=[sys.executable, "-c", "import sys; sys.exit(2)"])
    with pytest.raises(McpStartError, match=r"could not start"):
        await driver.start()


async def test_startup_timeout_kills_a_silent_server(drivers: Drivers) -> None:
    marker = f"chorus-mcp-silent-{uuid.uuid4().hex}"
    driver = drivers(command=[sys.executable, "-c", "import sys, time; time.sleep(60)", marker], startup_timeout=0.5)
    with pytest.raises(McpStartError, match=r"no answer within 0.5s"):  # the server would sleep 60 s
        await driver.start()
    assert processes_with(marker) == []


# -- the server's tool list changes ---------------------------------------------------------------


async def test_tools_follow_the_servers_list_changes(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    changes: list[McpTools] = []
    driver.watch_tools(changes.append)
    await driver.start()
    assert "fresh" not in {spec.name for spec in driver.tools()}
    assert await driver.call("grow", {"name": "fresh"}, ctx()) == "added"
    await wait_until(lambda: "fresh" in {spec.name for spec in driver.tools()})
    assert changes and changes[0] is driver
    assert await driver.call("fresh", {"text": "hi"}, ctx()) == "fresh: hi"
    assert await driver.call("shrink", {"name": "fresh"}, ctx()) == "removed"
    await wait_until(lambda: "fresh" not in {spec.name for spec in driver.tools()})
    with pytest.raises(ToolError, match=r"unknown tool 'fresh'"):
        await driver.call("fresh", {"text": "hi"}, ctx())


async def test_list_changes_keep_the_allow_list_and_prefix(drivers: Drivers, ctx: Ctx,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    driver = drivers(**stdio_table(tools=["add", "echo", "grow", "shrink"], prefix="p_"))
    await driver.start()
    await driver.call("p_grow", {"name": "intruder"}, ctx())
    await driver.call("p_shrink", {"name": "echo"}, ctx())  # an allow-listed tool goes away
    await wait_until(lambda: "p_echo" not in {spec.name for spec in driver.tools()})
    assert sorted(spec.name for spec in driver.tools()) == ["p_add", "p_grow", "p_shrink"]  # never p_intruder
    assert "no longer offers echo" in caplog.text
    await driver.call("p_grow", {"name": "echo"}, ctx())  # it comes back
    await wait_until(lambda: "p_echo" in {spec.name for spec in driver.tools()})
    assert await driver.call("p_echo", {"text": "back"}, ctx()) == "echo: back"


async def test_a_reconnect_lists_the_tools_again(drivers: Drivers, ctx: Ctx) -> None:
    driver = drivers(**stdio_table())
    await driver.start()
    await driver.call("grow", {"name": "ephemeral"}, ctx())
    await wait_until(lambda: "ephemeral" in {spec.name for spec in driver.tools()})
    with pytest.raises(ToolError, match=r"session ended"):
        await driver.call("crash", {}, ctx())
    assert await driver.call("add", {"a": 1, "b": 1}, ctx()) == "2"  # reconnected: a fresh server process
    assert "ephemeral" not in {spec.name for spec in driver.tools()}
