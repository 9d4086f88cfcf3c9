"""Shared fixtures: a scripted upstream, a live Chorus on loopback, and OpenAI SDK clients."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chorus.server.app import create_app
from chorus.contract.config import Config, parse_config
from chorus.runtime.keys import digest
from chorus.plugins.manager import PluginManager
from tests.live import LiveServer
from tests.upstream import ScriptedUpstream

ACME_KEY = "sk-acme-test-key"
GLOBEX_KEY = "sk-globex-test-key"
UPSTREAM_SECRET = "sk-upstream-canary-0123456789"

CONFIG = """
data_dir = "{data_dir}"

[server]
max_body_bytes = 200000
{server_extra}

[[providers]]
id = "up"
driver = "openai"
base_url = "{upstream}"
api_key = "${{CHORUS_TEST_UPSTREAM_KEY}}"
models = ["gpt-test", "shared-model"]

[[providers]]
id = "wild"
driver = "openai"
base_url = "{upstream}"
api_key = "${{CHORUS_TEST_UPSTREAM_KEY}}"
models = ["*"]

[[providers]]
id = "slow"
driver = "openai"
base_url = "{upstream}"
models = ["slow-model"]
timeout = 0.5

[[providers]]
id = "dead"
driver = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"
models = ["dead-model"]
connect_timeout = 1.0

[[workspaces]]
id = "acme"
api_keys = ["{acme_key}"]

[[workspaces]]
id = "globex"
api_keys = ["{globex_digest}"]

[[bots]]
id = "support"
workspace = "acme"
name = "Acme Support"
description = "Answers questions about Acme orders"
model = "up/gpt-test"
backstory = "You are Ada, Acme's support agent."
params = {{ temperature = 0.2, max_tokens = 400 }}

[[bots]]
id = "rival"
workspace = "globex"
name = "Globex Helper"
model = "up/gpt-test"
backstory = "You are Globex's helper."
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_config(upstream_url: str, extra: str = "", server_extra: str = "", data_dir: str | None = None) -> Config:
    import tempfile

    text = CONFIG.format(
        data_dir=data_dir or tempfile.mkdtemp(prefix="chorus-test-"),
        upstream=upstream_url, dead_port=free_port(), acme_key=ACME_KEY, globex_digest=digest(GLOBEX_KEY),
        server_extra=server_extra,
    ) + extra
    return parse_config(tomllib.loads(text), env={"CHORUS_TEST_UPSTREAM_KEY": UPSTREAM_SECRET})


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(scope="session")
def chorus_server(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_config(upstream.base_url))) as server:
        yield server


@pytest.fixture
def up(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    """The session upstream with an empty script and no recorded requests."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def client(chorus_server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    """The official SDK, authenticated as workspace ``acme``."""
    with openai.OpenAI(base_url=chorus_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=20) as sdk_client:
        yield sdk_client


@pytest.fixture
def globex(chorus_server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    """The official SDK, authenticated as workspace ``globex``."""
    with openai.OpenAI(base_url=chorus_server.url + "/v1", api_key=GLOBEX_KEY, max_retries=0, timeout=20) as sdk_client:
        yield sdk_client


def serve_with_plugins(
    upstream_url: str, *plugins: Any, extra: str = "", server_extra: str = "", tools: dict[str, type] | None = None,
    data_dir: str | None = None,
) -> LiveServer:
    """A separate live Chorus with extra hook plugins and tool drivers registered (a fresh data dir unless given)."""
    pm = PluginManager()
    for i, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test-plugin-{i}")
    for name, driver in (tools or {}).items():
        pm.register_driver("tools", name, driver)
    return LiveServer(create_app(make_config(upstream_url, extra, server_extra, data_dir), pm=pm))
