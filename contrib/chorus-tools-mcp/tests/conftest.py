"""Fixtures: the test MCP server over streamable HTTP, drivers built from raw tables, call contexts;
and ``scripted_upstream`` / ``serve_chorus`` from chorus.testing for the end-to-end test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

pytest_plugins = ["chorus.testing.fixtures"]

pytest.importorskip("chorus_tools_mcp", reason="chorus-tools-mcp is not installed")

from chorus_tools_mcp import McpTools
from mcp_testing import HttpServer, settings

from chorus.egress import EgressPolicy
from chorus.tools import ToolContext


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def egress() -> EgressPolicy:
    """The test skillset's policy: loopback is allow-listed (the test servers live there)."""
    return EgressPolicy(["127.0.0.1"])


@pytest.fixture
async def ctx(egress: EgressPolicy) -> AsyncIterator[Callable[..., ToolContext]]:
    """A factory of per-call contexts (default deadline: 30 s from the call)."""
    http = egress.client()

    def make(seconds: float = 30.0) -> ToolContext:
        return ToolContext(
            workspace="acme", bot="ops-bot", request_id="req-1", deadline=time.monotonic() + seconds, http=http
        )

    async with http:
        yield make


@pytest.fixture
async def drivers(egress: EgressPolicy) -> AsyncIterator[Callable[..., McpTools]]:
    """A factory of drivers from raw settings; every driver made is closed at teardown."""
    made: list[McpTools] = []

    def make(policy: EgressPolicy | None = None, **raw: Any) -> McpTools:
        driver = McpTools(settings(**raw), policy or egress)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.aclose()
