"""Usage records: written on shutdown, one per request and model, failures recorded with their status;
prices validated strictly."""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path

import openai
import pytest

from chorus.config import parse_config
from chorus.contract.config import Price
from chorus.errors import ConfigError
from chorus.plugins.manager import PluginManager
from chorus.runtime.services import build_providers
from chorus.storage.access import SqliteAccessStore, UsageGroup
from chorus.testing.config import ACME_KEY, STATE_ENV
from chorus.testing.upstream import Error, Reply, ScriptedUpstream
from tests.test_admin import USER, sdk, start


def stored(data_dir: Path, group_by: str = "model") -> dict[str, UsageGroup]:
    async def read() -> list[UsageGroup]:
        store = SqliteAccessStore(data_dir / "access.sqlite3")
        await store.start()
        try:
            return await store.usage(group_by, 0, 1e12)  # type: ignore[arg-type]
        finally:
            await store.aclose()

    return {g.group: g for g in asyncio.run(read())}


@pytest.mark.skipif(os.environ.get(STATE_ENV) == "postgresql", reason="reads the SQLite store directly")
def test_pending_records_are_written_at_shutdown_and_failures_keep_their_status(
        upstream: ScriptedUpstream, up: ScriptedUpstream, tmp_path: Path) -> None:
    server = start(upstream, tmp_path)
    try:
        up.push(Reply(content="a", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
                Error(status=400, message="bad things", code="bad_request"))
        with sdk(server, ACME_KEY) as client:
            client.chat.completions.create(model="model/name=priced/gpt-priced", messages=USER)
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
    finally:
        server.stop()  # well within the flusher's first second: the records are written by the shutdown
    groups = stored(tmp_path)
    assert groups["priced/gpt-priced"].input_tokens == 7 and groups["priced/gpt-priced"].output_tokens == 3
    assert groups["priced/gpt-priced"].cost_nanos == 7 * 1000 * 1000 + 3 * 2000 * 1000
    assert groups["up/gpt-test"].requests == 1 and groups["up/gpt-test"].input_tokens == 0


def test_price_arithmetic() -> None:
    price = Price(input=2.5, output=10.0, cached_input=1.25)
    assert price.cost_nanos(1000, 100, 400) == 600 * 2500 + 400 * 1250 + 100 * 10_000
    assert Price(input=1.0).cost_nanos(10, 10, 5) == 10 * 1000  # cached input defaults to the input price


@pytest.mark.parametrize(("table", "message"), [
    ('prices = { "m" = { input = 1.0, outptu = 2.0 } }', "outptu"),
    ('prices = { "m" = { input = -1.0 } }', "input"),
    ('prices = { "m" = 3 }', "prices"),
])
def test_prices_are_validated_strictly(table: str, message: str) -> None:
    text = f"""
[[providers]]
id = "p"
driver = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["m"]
{table}
"""
    config = parse_config(tomllib.loads(text), env={})
    with pytest.raises(ConfigError, match=message):
        build_providers(config, PluginManager())


@pytest.mark.parametrize(("server", "message"), [
    ('admin_keys = ["sk-clear-text"]', "admin_keys"),
    ("limit_window_seconds = 0", "limit_window_seconds"),
])
def test_server_access_settings_are_validated(server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(f"[server]\n{server}\n"), env={})


@pytest.mark.parametrize(("workspace", "message"), [
    ("limits = { rpm = 0 }", "rpm"),
    ("limits = { rpn = 5 }", "rpn"),
    ('budget = { amount = 5, period = "fortnight" }', "period"),
])
def test_workspace_limits_are_validated(workspace: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(f'[[workspaces]]\nid = "w"\n{workspace}\n'), env={})
