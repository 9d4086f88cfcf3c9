"""pytest fixtures for end-to-end plugin tests: a scripted upstream and a live Chorus in front of it.

Enable them in your suite's top conftest (the ``conftest.py`` next to your tests)::

    # tests/conftest.py
    pytest_plugins = ["chorus.testing.fixtures"]

then::

    from chorus.testing.config import ACME_KEY
    from chorus.testing.upstream import Reply

    def test_the_bot_answers(scripted_upstream, serve_chorus):
        server = serve_chorus('''
        [[bots]]
        id = "chef"
        workspace = "acme"
        model = "up/gpt-test"
        ''')
        scripted_upstream.push(Reply("Bake at 180 °C."))
        with server.openai_client(ACME_KEY) as client:
            completion = client.chat.completions.create(model="bot/id=chef", messages=[...])
        assert completion.choices[0].message.content == "Bake at 180 °C."

Fixtures (all function-scoped, cleaned up after the test):

* ``scripted_upstream``: a started :class:`~chorus.testing.upstream.ScriptedUpstream`.
* ``serve_chorus``: a factory (:class:`ServeChorus`) of *started*
  :class:`~chorus.testing.server.LiveServer`\\ s. Given TOML (or nothing), it serves
  :func:`chorus.testing.config.make_config`'s test configuration with providers on
  ``scripted_upstream`` and that TOML appended; given a :class:`chorus.config.Config`, it serves
  that. Each call gets a new data directory under the test's ``tmp_path`` unless ``data_dir`` is
  given (to restart on the same data, stop the first server, e.g. with ``with serve_chorus(...)
  as server:``). Plugins, ``tools=``, ``drivers=`` and ``env=`` are
  :func:`chorus.testing.gateway.make_app`'s.

Unlike the conformance kits, this module imports pytest (it is a pytest plugin).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest

from chorus.config import Config
from chorus.testing.config import make_config
from chorus.testing.gateway import serve
from chorus.testing.server import LiveServer
from chorus.testing.upstream import ScriptedUpstream

__all__ = ["ServeChorus", "scripted_upstream", "serve_chorus"]


class ServeChorus(Protocol):
    """The type of the ``serve_chorus`` fixture (for annotations)."""

    def __call__(self, config: Config | str = "", *plugins: object, server_extra: str = "",
                 data_dir: str | Path | None = None, tools: Mapping[str, type] | None = None,
                 drivers: Mapping[str, Mapping[str, type]] | None = None,
                 env: Mapping[str, str] | None = None) -> LiveServer: ...


@pytest.fixture
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    """A fresh scripted OpenAI-compatible upstream, stopped after the test."""
    with ScriptedUpstream() as upstream:
        yield upstream


@pytest.fixture
def serve_chorus(scripted_upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[ServeChorus]:
    """Start live Chorus servers (see the module docstring); all are stopped after the test."""
    servers: list[LiveServer] = []
    fresh = itertools.count()

    def start(config: Config | str = "", *plugins: object, server_extra: str = "",
              data_dir: str | Path | None = None, tools: Mapping[str, type] | None = None,
              drivers: Mapping[str, Mapping[str, type]] | None = None,
              env: Mapping[str, str] | None = None) -> LiveServer:
        if isinstance(config, str):
            data = data_dir if data_dir is not None else tmp_path / f"chorus-data-{next(fresh)}"
            config = make_config(scripted_upstream.base_url, config, server_extra, str(data))
        elif server_extra or data_dir is not None:
            raise TypeError("server_extra and data_dir apply to TOML, not to a ready Config")
        server = serve(config, *plugins, tools=tools, drivers=drivers, env=env)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
