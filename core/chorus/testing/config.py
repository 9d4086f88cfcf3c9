"""A ready test configuration: two workspaces with known keys, providers on a scripted upstream.

:func:`make_config` parses :data:`CONFIG_TEMPLATE` (plus any TOML you append) into a
:class:`chorus.config.Config`, the way ``chorus serve`` parses a file::

    from chorus.testing.config import ACME_KEY, make_config

    config = make_config(upstream.base_url, extra='''
    [[bots]]
    id = "chef"
    workspace = "acme"
    model = "up/gpt-test"
    ''')

What the template holds (use these names in the TOML you append):

* workspace ``acme``, API key :data:`ACME_KEY` (stored in clear), and workspace ``globex``,
  API key :data:`GLOBEX_KEY` (stored as its digest);
* providers on the upstream URL: ``up`` (models ``gpt-test``, ``shared-model``; sends
  :data:`UPSTREAM_SECRET` as its API key, from the ``CHORUS_TEST_UPSTREAM_KEY`` variable),
  ``wild`` (any model, same key), ``slow`` (model ``slow-model``, 0.5 s timeout); and ``dead``
  (model ``dead-model``, on a port where nothing listens);
* bots ``support`` (workspace ``acme``, ``up/gpt-test``, a backstory and params) and ``rival``
  (workspace ``globex``);
* ``[server] max_body_bytes = 200000`` plus ``server_extra``, and a fresh temporary
  ``data_dir`` unless one is given;
* failover off, so a scripted fault reaches the client as scripted: every provider table (the
  template's and yours) gets ``retries = 0`` and ``breaker_failures = 0`` unless it sets them
  (tests of retries and the circuit breaker set them).

:mod:`chorus.testing.gateway` builds and serves an app from such a config; the
``serve_chorus`` fixture of :mod:`chorus.testing.fixtures` does both against a scripted upstream.
"""

from __future__ import annotations

import os
import tempfile
import tomllib

from chorus.config import Config, parse_config
from chorus.runtime.keys import digest  # the one internal import here (hashing a key as Chorus stores it)
from chorus.testing.server import free_port

__all__ = [
    "ACME_KEY",
    "CONFIG_TEMPLATE",
    "GLOBEX_KEY",
    "STATE_ENV",
    "UPSTREAM_KEY_VARIABLE",
    "UPSTREAM_SECRET",
    "make_config",
    "state_table",
]

#: The API key of workspace ``acme`` (listed in clear in the configuration).
ACME_KEY = "sk-acme-test-key"
#: The API key of workspace ``globex`` (listed as its digest in the configuration).
GLOBEX_KEY = "sk-globex-test-key"
#: What providers ``up`` and ``wild`` send upstream as their API key; it must never reach a client.
UPSTREAM_SECRET = "sk-upstream-canary-0123456789"
#: The environment variable the template reads :data:`UPSTREAM_SECRET` from.
UPSTREAM_KEY_VARIABLE = "CHORUS_TEST_UPSTREAM_KEY"

CONFIG_TEMPLATE = """
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


#: ``CHORUS_TEST_STATE=postgresql`` runs every configuration :func:`make_config` builds on the
#: PostgreSQL state backend (a fresh schema each, dropped when the process exits).
STATE_ENV = "CHORUS_TEST_STATE"


def make_config(upstream_url: str, extra: str = "", server_extra: str = "", data_dir: str | None = None) -> Config:
    """The test configuration with its providers on ``upstream_url`` (e.g. ``ScriptedUpstream.base_url``).

    Failover is off unless a provider table turns it on (see the module docstring).
    ``extra`` is TOML appended at the end (more tables: ``[[skillsets]]``, ``[[bots]]``,
    ``[knowledge]``...); ``server_extra`` is TOML lines inside ``[server]``. ``data_dir`` defaults
    to a new temporary directory. Raises :class:`chorus.errors.ConfigError` as ``chorus serve``
    would for an invalid configuration. With ``$CHORUS_TEST_STATE`` set to ``postgresql`` the
    configuration also gets a ``[state]`` table on a scratch schema (:func:`state_table`).
    """
    data_dir = data_dir or tempfile.mkdtemp(prefix="chorus-test-")
    text = CONFIG_TEMPLATE.format(
        data_dir=data_dir,
        upstream=upstream_url, dead_port=free_port(), acme_key=ACME_KEY, globex_digest=digest(GLOBEX_KEY),
        server_extra=server_extra,
    ) + extra
    if os.environ.get(STATE_ENV) == "postgresql" and "[state]" not in extra:
        text += state_table(key=str(data_dir))
    data = tomllib.loads(text)
    for provider in data.get("providers") or []:
        if isinstance(provider, dict):
            provider.setdefault("retries", 0)
            provider.setdefault("breaker_failures", 0)
    return parse_config(data, env={UPSTREAM_KEY_VARIABLE: UPSTREAM_SECRET})


def state_table(url: str | None = None, key: str | None = None) -> str:
    """A ``[state]`` table on a scratch schema of the test PostgreSQL (dropped when the process exits).

    Configurations with the same ``key`` (make_config passes the data dir) share one schema, as
    servers sharing a data dir share its SQLite state. The built-in sqlite vector store is allowed.
    """
    from chorus.testing import postgres

    url = url or postgres.postgres_url()
    if url is None:
        raise RuntimeError(postgres.SKIP_REASON)
    schema = postgres.claim_schema(url, key=key)
    return f'\n[state]\nurl = "{url}"\nschema = "{schema}"\nallow_local_vector_store = true\n'
