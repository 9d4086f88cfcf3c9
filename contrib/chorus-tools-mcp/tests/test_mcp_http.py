"""The driver against the real test server over streamable HTTP, through the egress guard."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
import pytest
from chorus_tools_mcp import McpStartError, McpTools
from chorus_tools_mcp.transport import EgressBridge
from mcp_testing import TOKEN, HttpServer, wait_until

from chorus.egress import EgressDenied, EgressPolicy
from chorus.tools import ToolContext, ToolError

Drivers = Callable[..., McpTools]
Ctx = Callable[..., ToolContext]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_lists_and_calls_over_http(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH, tools=["add", "stats", "fail"], prefix="web-")
    await driver.start()
    assert sorted(spec.name for spec in driver.tools()) == ["web-add", "web-fail", "web-stats"]
    assert await driver.call("web-add", {"a": 20, "b": 22}, ctx()) == "42"
    assert await driver.call("web-stats", {"values": [2, 3]}, ctx()) == '{\n  "count": 2,\n  "sum": 5.0\n}'
    with pytest.raises(ToolError, match=r"bad things$"):
        await driver.call("web-fail", {"reason": "bad things"}, ctx())


async def test_header_secrets_are_masked_in_results(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH)
    await driver.start()
    # A server echoing what it received cannot hand the secret to the model.
    assert await driver.call("whoami", {}, ctx()) == "you sent ***"
    assert await driver.call("echo", {"text": f"token={TOKEN}"}, ctx()) == "token=***"
    with pytest.raises(ToolError, match=r"^Error executing tool fail: no \*\*\*$"):
        await driver.call("fail", {"reason": f"no {TOKEN}"}, ctx())


async def test_wrong_credentials_fail_start_without_leaking_them(
    drivers: Drivers, http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Bearer wr0ng-but-still-secret"
    driver = drivers(url=http_server.url + "?tenant=acme-q-secret", headers={"Authorization": secret})
    with pytest.raises(McpStartError) as info:
        await driver.start()
    message = str(info.value)
    assert message.startswith(f"MCP server 'test-mcp' ({http_server.url}) could not start")
    assert "wr0ng-but-still-secret" not in message and "acme-q-secret" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # Header values reach no log record (httpx itself logs URLs: keep secrets out of them).
    assert "wr0ng-but-still-secret" not in caplog.text
    assert "HTTP 401 from POST" in caplog.text


async def test_timeout_over_http(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH, timeout=0.5)
    await driver.start()
    with pytest.raises(ToolError, match=r"slow did not finish within 0.5s"):  # it would finish after 10 s
        await driver.call("slow", {"seconds": 10}, ctx())
    assert await driver.call("add", {"a": 1, "b": 1}, ctx()) == "2"


async def test_egress_guard_refuses_a_url_not_allow_listed(drivers: Drivers, http_server: HttpServer) -> None:
    driver = drivers(EgressPolicy([]), url=http_server.url, headers=AUTH)
    with pytest.raises(McpStartError, match=r"could not start: egress denied for http://127.0.0.1:"):
        await driver.start()


async def test_egress_guard_refuses_metadata_names(drivers: Drivers) -> None:
    driver = drivers(url="http://metadata.google.internal/mcp", headers=AUTH)
    with pytest.raises(McpStartError, match=r"egress denied"):
        await driver.start()


async def test_restarted_server_is_reconnected(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH)
    await driver.start()
    first = await driver.call("pid", {}, ctx())
    http_server.stop()
    http_server.start()
    results: list[str] = []
    for _ in range(2):  # at most one call fails (the session it ran in is gone), then it reconnects
        try:
            results.append(await driver.call("pid", {}, ctx()))
        except ToolError as exc:
            assert "the next call reconnects" in str(exc)
    assert results and results[-1] != first


async def test_unreachable_server_fails_calls_until_it_is_back(
    drivers: Drivers, ctx: Ctx, http_server: HttpServer
) -> None:
    driver = drivers(url=http_server.url, headers=AUTH)
    await driver.start()
    first = await driver.call("pid", {}, ctx())
    http_server.down()
    with pytest.raises(ToolError, match=r"session ended during the call .*ConnectError.*the next call reconnects"):
        await driver.call("pid", {}, ctx())
    with pytest.raises(ToolError, match=r"the MCP server is unavailable: .*ConnectError"):
        await driver.call("pid", {}, ctx())
    http_server.up()
    assert await driver.call("pid", {}, ctx()) != first


async def test_aclose_ends_the_http_session(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH)
    await driver.start()
    assert await driver.call("echo", {"text": "bye"}, ctx()) == "bye"
    await driver.aclose()
    with pytest.raises(ToolError, match=r"shut down"):
        await driver.call("echo", {"text": "again"}, ctx())


async def test_session_traffic_goes_through_the_guarded_client(http_server: HttpServer) -> None:
    # The bridge the MCP SDK's HTTP client sends through enforces the policy on every request.
    for policy, allowed in ((EgressPolicy([]), False), (EgressPolicy(["127.0.0.1"]), True)):
        guarded = policy.client()
        async with guarded, httpx2.AsyncClient(transport=EgressBridge(guarded, "test-mcp")) as client:
            if allowed:
                response = await client.get(http_server.url, headers=AUTH)
                assert response.status_code == 400  # reached the server: a bare GET lacks MCP headers
            else:
                with pytest.raises(EgressDenied):
                    await client.get(http_server.url, headers=AUTH)


async def test_tools_follow_list_changes_over_http(drivers: Drivers, ctx: Ctx, http_server: HttpServer) -> None:
    driver = drivers(url=http_server.url, headers=AUTH)
    await driver.start()
    await driver.call("grow", {"name": "remote_fresh"}, ctx())
    await wait_until(lambda: "remote_fresh" in {spec.name for spec in driver.tools()})
    assert await driver.call("remote_fresh", {"text": "over http"}, ctx()) == "remote_fresh: over http"
