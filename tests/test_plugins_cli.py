"""Plugin loading (isolation, allow/block lists), the CLI, and the embedded default config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chorus.cli.main import main
from chorus.plugins.manager import PluginManager
from chorus.runtime.defaults import KEY_FILE, default_config
from chorus.runtime.keys import digest
from chorus.testing.server import free_port
from chorus.testing.upstream import Reply

ENTRY_POINTS = """
[chorus.plugins]
broken = chorus_test_broken_plugin
working = chorus_test_working_plugin

[chorus.providers]
brokenprov = chorus_test_broken_plugin:Nope
"""


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution with one broken and one working hook plugin."""
    info = tmp_path / "chorus_test_plugins-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chorus-test-plugins\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (tmp_path / "chorus_test_broken_plugin.py").write_text("raise RuntimeError('kaboom at import')\n")
    (tmp_path / "chorus_test_working_plugin.py").write_text(
        "from chorus import hookimpl\n\n@hookimpl\ndef build_system_prompt(ctx):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))  # keep stevedore's entry point cache out of the real home
    return tmp_path


def test_broken_plugin_is_reported_and_skipped(fake_dist: Path) -> None:
    pm = PluginManager(env={})
    failed = {(f.group, f.name): f for f in pm.failures}
    assert "kaboom at import" in failed[("chorus.plugins", "broken")].error
    assert failed[("chorus.plugins", "broken")].distribution == "chorus-test-plugins"
    loaded = {(p.group, p.name): p for p in pm.describe()}
    assert loaded[("chorus.plugins", "working")].hooks == ["build_system_prompt"]
    assert loaded[("chorus.plugins", "working")].version == "1.2.3"
    assert ("chorus.providers", "openai") in loaded
    assert ("chorus.providers", "brokenprov") not in loaded
    assert any(f.name == "brokenprov" for f in pm.failures)


def test_allow_and_block_lists(fake_dist: Path) -> None:
    pm = PluginManager(env={"CHORUS_DISABLE_PLUGINS": "broken"})
    assert not any(f.name == "broken" for f in pm.failures)
    assert pm.hooks_of("working") == ["build_system_prompt"]
    only = PluginManager(env={"CHORUS_PLUGINS": "chorus-gateway"})
    assert only.failures == [] and only.hooks_of("working") == []
    assert only.hooks_of("selectors") == ["resolve_target"]
    assert set(only.drivers("providers")) == {"openai"}


def test_cli_plugins_lists_failures(fake_dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {(p["group"], p["name"], p["distribution"]) for p in report["plugins"]}
    assert ("chorus.plugins", "selectors", "chorus-gateway") in names
    assert ("chorus.plugins", "working", "chorus-test-plugins") in names
    assert {f["name"] for f in report["failures"] if f["distribution"] == "chorus-test-plugins"} == {"broken", "brokenprov"}
    assert main(["plugins", "--strict"]) == 1
    table = capsys.readouterr().out
    assert "resolve_target" in table and "FAILED" in table and "kaboom" in table


def test_cli_keys_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    key, config = lines["key"].strip(), lines["config"].strip()
    assert config == digest(key)


def test_cli_config_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[workspaces]]\nid = "w"\napi_keys = ["k"]\nbogus = 1\n')
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "unknown field `bogus`" in capsys.readouterr().err


def test_default_config_generates_key_once(tmp_path: Path) -> None:
    env = {"CHORUS_DATA_DIR": str(tmp_path)}
    config, key = default_config(env)
    assert key is not None
    stored = (tmp_path / KEY_FILE).read_text().strip()
    assert stored == digest(key) and key not in stored
    assert os.stat(tmp_path / KEY_FILE).st_mode & 0o077 == 0
    assert config.providers[0]["driver"] == "llamacpp"
    assert config.bots[0].model == "local/gemma-3-270m"
    again, second = default_config(env)
    assert second is None and again.workspaces[0].api_keys == [stored]
    with_openai, _ = default_config({**env, "OPENAI_API_KEY": "sk-x"})
    assert with_openai.providers[0]["driver"] == "openai"
    assert with_openai.bots[0].model == "openai/gpt-4o-mini"


def test_chorus_serve_subprocess(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    config = tmp_path / "chorus.toml"
    config.write_text(
        f'[[providers]]\nid = "up"\ndriver = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-test"]\n'
        f'[[workspaces]]\nid = "w"\napi_keys = ["{digest("sk-serve-test")}"]\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, "CHORUS_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "chorus serve did not start"
            time.sleep(0.1)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer sk-serve-test"})
        assert [m["id"] for m in models.json()["data"]] == ["model/name=up/gpt-test"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "sk-serve-test" not in output


def test_demo_bot_answers_from_the_project_docs_with_citations(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    """The embedded default (OpenAI flavour, pointed at the scripted upstream) cites the docs."""
    import openai

    from chorus.app import create_app
    from chorus.testing.server import LiveServer

    upstream.reset()
    env = {"CHORUS_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": upstream.base_url}
    config, key = default_config(env)
    assert config.datasets[0].id == "chorus-docs" and config.bots[0].datasets == ["chorus-docs"]
    assert key is not None
    upstream.push(Reply(content="Use the bot/id= selector [1]."))
    with LiveServer(create_app(config)) as server, openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, max_retries=0
    ) as client:
        completion = client.chat.completions.create(
            model="bot/id=demo", messages=[{"role": "user", "content": "What is the selector grammar for bots?"}])
    system = upstream.requests[-1].json["messages"][0]["content"]
    assert "bot/id=" in system and "[1]" in system
    annotation = completion.choices[0].message.annotations[0].url_citation  # type: ignore[index]
    assert annotation.url.startswith("chorus://datasets/chorus-docs/files/")
    upstream.reset()
