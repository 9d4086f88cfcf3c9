"""Configuration: strict keys, ${VAR} expansion, references, provider settings owned by drivers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from chorus.contract.config import load_config, parse_config
from chorus.contract.errors import ConfigError
from chorus.contract.secrets import Secret
from chorus.server.app import create_app

ISSUE_EXAMPLE = """
[[providers]]
id = "openai"
driver = "openai"
base_url = "https://api.openai.com/v1"
api_key = "${OPENAI_API_KEY}"
models = ["gpt-4o-mini"]

[[workspaces]]
id = "acme"
api_keys = ["${ACME_KEY}", "sha256:%s"]

[[bots]]
id = "support"
workspace = "acme"
name = "Acme Support"
description = "Answers questions about Acme orders"
model = "openai/gpt-4o-mini"
backstory = "You are Ada, Acme's support agent."
params = { temperature = 0.2, max_tokens = 400 }
""" % ("ab" * 32)

ENV = {"OPENAI_API_KEY": "sk-real-secret", "ACME_KEY": "sk-acme"}


def test_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "chorus.toml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path, env=ENV)
    assert config.workspaces[0].api_keys == ["sk-acme", "sha256:" + "ab" * 32]
    assert config.bots[0].params.temperature == 0.2
    app = create_app(config)
    provider = app.state.pipeline.registry.providers["openai"]
    assert isinstance(provider.settings.api_key, Secret)
    assert "sk-real-secret" not in repr(provider.settings)
    assert provider.settings.api_key.get() == "sk-real-secret"


def test_missing_env_var_names_it() -> None:
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api_key: environment variable OPENAI_API_KEY is not set"):
        parse_config(tomllib.loads(ISSUE_EXAMPLE), env={"ACME_KEY": "x"})


def test_escaped_dollar_is_literal() -> None:
    raw = {"workspaces": [{"id": "w", "name": "cost $${HOME}", "api_keys": ["k"]}]}
    assert parse_config(raw, env={}).workspaces[0].name == "cost ${HOME}"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["bots"][0].update(colour="red"), "unknown field `colour`"),
        (lambda d: d.update(extra_table={}), "unknown field `extra_table`"),
        (lambda d: d["bots"][0]["params"].update(temprature=1), "unknown field `temprature`"),
        (lambda d: d["bots"][0].update(workspace="nope"), "unknown workspace 'nope'"),
        (lambda d: d["workspaces"][0]["api_keys"].append("sha256:xyz"), "64 lowercase hex"),
        (lambda d: d["bots"].append(dict(d["bots"][0])), "used twice"),
        (lambda d: d["bots"][0].update(params={"temperature": "hot"}), "Expected `float`"),
        (lambda d: d.update(server={"workers": 0}), r"Expected `int` >= 1 - at `server.workers`"),
        (lambda d: d.update(server={"port": 70000}), r"Expected `int` <= 65535 - at `server.port`"),
        (lambda d: d.update(server={"keepalive_seconds": 0}), r"Expected `float` > 0.0 - at `server.keepalive_seconds`"),
        (lambda d: d.update(server={"parked_turns": "redis"}), r"Invalid enum value 'redis' - at `server.parked_turns`"),
    ],
)
def test_strict_config_errors_name_the_key(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = tomllib.loads(ISSUE_EXAMPLE)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data, env=ENV)


def test_provider_keys_are_validated_by_the_driver() -> None:
    data = tomllib.loads(ISSUE_EXAMPLE)
    data["providers"][0]["base_ulr"] = "typo"
    with pytest.raises(ConfigError, match=r"providers\[0\].*unknown field `base_ulr`"):
        create_app(parse_config(data, env=ENV))


def test_unknown_driver_lists_installed() -> None:
    data = tomllib.loads(ISSUE_EXAMPLE)
    data["providers"][0]["driver"] = "nonexistent"
    with pytest.raises(ConfigError, match="no providers driver named 'nonexistent'.*installed: .*openai"):
        create_app(parse_config(data, env=ENV))


def test_bot_model_must_resolve() -> None:
    data = tomllib.loads(ISSUE_EXAMPLE)
    data["bots"][0]["model"] = "other/gpt-4o-mini"
    with pytest.raises(ConfigError, match=r"bots\[0\]\.model 'other/gpt-4o-mini' matches no provider"):
        create_app(parse_config(data, env=ENV))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[providers]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
