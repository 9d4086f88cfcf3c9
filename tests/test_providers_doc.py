"""docs/providers.md stays true: every TOML block passes ``chorus config check``, and a request through
each provider table reaches the upstream as documented (path, model, key header, query).

The blocks are read from the Markdown itself, so the page cannot drift from what is tested.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from chorus.app import create_app
from chorus.cli.main import main
from chorus.config import parse_config
from chorus.errors import ConfigError
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

DOC = Path(__file__).resolve().parents[1] / "docs" / "providers.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
WORKSPACE = '\n[[workspaces]]\nid = "docs"\napi_keys = ["sk-docs"]\n'
KEY = "sk-docs"

#: What the page promises, by provider id: its base_url (Azure's resource name set to ``res``).
EXPECTED = {
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8001/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "openai": "https://api.openai.com/v1",
    "azure": "https://res.openai.azure.com/openai/v1",
    "azure-classic": "https://res.openai.azure.com/openai/deployments/my-gpt-4o-mini",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
}


def fake_env(text: str) -> dict[str, str]:
    """A value for every ``${VAR}`` the block names (the resource name of Azure is ``res``)."""
    return {name: "res" if name.endswith("_RESOURCE") else f"secret-{name.lower()}" for name in VARIABLE.findall(text)}


def provider_tables() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(id, the raw provider table, the environment it needs) for every provider the page shows."""
    found: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {}
    for block in BLOCKS:
        for provider in tomllib.loads(block).get("providers", []):
            found.setdefault(provider["id"], (provider["id"], provider, fake_env(block)))
    return list(found.values())


def test_the_page_covers_every_provider_of_the_issue() -> None:
    assert {p[0] for p in provider_tables()} == set(EXPECTED)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_toml_block_passes_config_check(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in fake_env(block).items():
        monkeypatch.setenv(name, value)
    text = block if "[[workspaces]]" in block else block + WORKSPACE
    path = tmp_path / "chorus.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + text)
    assert main(["config", "check", "--config", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("ok: 1 provider")


@pytest.mark.parametrize(("ident", "table", "env"), provider_tables(), ids=[p[0] for p in provider_tables()])
def test_a_request_through_each_documented_provider_reaches_the_upstream_as_documented(
        ident: str, table: dict[str, Any], env: dict[str, str], upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """The documented table, its base_url pointed at the scripted upstream (everything else kept)."""
    documented = parse_config({"providers": [table]}, env=env).providers[0]
    assert documented["base_url"].rstrip("/") == EXPECTED[ident]
    upstream.reset()
    config = parse_config({
        "data_dir": str(tmp_path),
        "providers": [{**table, "base_url": upstream.base_url}],
        "workspaces": [{"id": "docs", "api_keys": [KEY]}],
    }, env=env)
    model = table["models"][0]
    upstream.push(Reply("hello"))
    with LiveServer(create_app(config)) as server:
        response = httpx.post(f"{server.base_url}/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                              json={"model": f"model/name={ident}/{model}", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == model
    assert sent.query == urlencode(table.get("query", {}))
    key = env.get(VARIABLE.fullmatch(table["api_key"]).group(1)) if "api_key" in table else None  # type: ignore[union-attr]
    if key is None:
        assert "authorization" not in sent.headers
    elif table.get("api_key_header"):
        assert sent.headers[table["api_key_header"]] == key and "authorization" not in sent.headers
    else:
        assert sent.headers["authorization"] == f"Bearer {key}"
    for name, value in table.get("headers", {}).items():
        assert sent.headers[name.lower()] == value


def test_azure_style_settings_apply_to_embeddings_too(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.reset()
    config = parse_config({
        "data_dir": str(tmp_path),
        "providers": [{"id": "az", "driver": "openai", "base_url": upstream.base_url, "api_key": "k-az",
                       "api_key_header": "api-key", "query": {"api-version": "2024-10-21"}, "models": ["emb"]}],
        "workspaces": [{"id": "docs", "api_keys": [KEY]}],
    })
    with LiveServer(create_app(config)) as server:
        response = httpx.post(f"{server.base_url}/embeddings", headers={"authorization": f"Bearer {KEY}"},
                              json={"model": "model/name=az/emb", "input": ["a"]})
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert (sent.path, sent.query, sent.headers["api-key"]) == ("/v1/embeddings", "api-version=2024-10-21", "k-az")


def test_a_query_in_base_url_is_a_configuration_error(tmp_path: Path) -> None:
    config = parse_config({
        "data_dir": str(tmp_path),
        "providers": [{"id": "az", "driver": "openai", "base_url": "https://x.test/v1?api-version=1", "models": ["m"]}],
    })
    with pytest.raises(ConfigError, match="providers\\[0\\]: base_url must not carry a query string"):
        create_app(config)
