"""The monorepo's shared fixtures: one scripted upstream and one live Chorus per session, SDK clients.

The helpers behind them (and the per-test ``scripted_upstream`` / ``serve_chorus`` fixtures that
contrib suites use) live in :mod:`chorus.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from chorus.testing.config import ACME_KEY, GLOBEX_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import ScriptedUpstream

pytest_plugins = ["chorus.testing.fixtures"]


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(scope="session")
def chorus_server(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with LiveServer(make_app(make_config(upstream.base_url))) as server:
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
