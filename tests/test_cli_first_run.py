"""The command line a newcomer meets: the default key's recovery, what ``datasets list`` and ``config
check`` report, and one error form (``chorus: error: ...``) on every failure path."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from chorus.cli.main import main
from chorus.runtime.defaults import KEY_FILE, default_config
from chorus.runtime.keys import digest
from chorus.testing.server import free_port

DATA = Path(__file__).parent / "data" / "kb"
cli = importlib.import_module("chorus.cli.main")  # the module (``chorus.cli.main`` the attribute is the function)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data dir for the embedded default; no configuration file anywhere."""
    directory = tmp_path / "data"
    monkeypatch.setenv("CHORUS_DATA_DIR", str(directory))
    monkeypatch.delenv("CHORUS_CONFIG", raising=False)
    return directory


# -- the default workspace's key ------------------------------------------------------------------


def test_keys_reset_default_replaces_the_stored_key(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first = default_config({"CHORUS_DATA_DIR": str(data_dir)})
    assert first is not None
    code, out, err = run(capsys, "keys", "reset-default")
    new = out.strip()
    assert code == 0 and new.startswith("sk-chorus-") and new != first
    assert "Replaced" in err and "Restart" in err and new not in err
    stored = (data_dir / KEY_FILE).read_text().strip()
    assert stored == digest(new) and new not in stored
    assert os.stat(data_dir / KEY_FILE).st_mode & 0o077 == 0
    assert not list(data_dir.glob("*.tmp"))
    # the embedded default now accepts the new key only, and does not make another one
    config, fresh = default_config({"CHORUS_DATA_DIR": str(data_dir)})
    assert fresh is None and config.workspaces[0].api_keys == [digest(new)]


def test_keys_reset_default_without_a_key_yet_creates_one(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "reset-default")
    assert code == 0 and "Created" in err
    assert (data_dir / KEY_FILE).read_text().strip() == digest(out.strip())


def test_serve_says_how_to_recover_the_default_key_on_every_start(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    monkeypatch.setattr(cli, "tune_gc", lambda threshold: None)  # keep the test process's GC as it is
    monkeypatch.setattr("sys.argv", [".venv/bin/chorus", "serve"])
    # the OpenAI flavour of the embedded default (nothing is contacted: the server is not started)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")

    code, _, err = run(capsys, "serve")
    key = next(line.strip() for line in err.splitlines() if line.strip().startswith("sk-chorus-"))
    assert code == 0 and "shown only this once" in err
    assert "`.venv/bin/chorus keys reset-default`" in err
    assert "Playground: http://127.0.0.1:8000/" in err

    code, _, err = run(capsys, "serve")
    assert code == 0 and key not in err and "sk-chorus-" not in err
    assert "Lost it? `.venv/bin/chorus keys reset-default` makes a new one" in err
    assert str(data_dir / KEY_FILE) in err
    assert len(served) == 2


def test_serve_with_a_configuration_says_nothing_about_the_default_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    monkeypatch.setattr(cli, "tune_gc", lambda threshold: None)
    config = tmp_path / "chorus.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[server]\nplayground = false\n'
                      '[[workspaces]]\nid = "w"\napi_keys = ["k"]\n')
    code, _, err = run(capsys, "serve", "--config", str(config))
    assert code == 0 and "reset-default" not in err and "Playground" not in err


# -- what datasets list and config check report -----------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CHORUS_DATA_DIR", raising=False)
    (tmp_path / "chorus.toml").write_text(f"""
data_dir = "{tmp_path / "data"}"

[[providers]]
id = "up"
driver = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["m"]

[[workspaces]]
id = "acme"
api_keys = ["k"]

[[datasets]]
id = "handbook"
workspace = "acme"
name = "Handbook"
sources = ["{DATA}/*.md"]

[[datasets]]
id = "faq"
workspace = "acme"
sources = ["{DATA}/*.txt"]

[[skillsets]]
id = "math"
workspace = "acme"
[[skillsets.tools]]
name = "calc"
driver = "calculator"

[[search_engines]]
id = "web"
driver = "searxng"
base_url = "http://127.0.0.1:9"

[[bots]]
id = "helper"
workspace = "acme"
model = "up/m"
datasets = ["handbook", "faq"]
skillsets = ["math"]
search = {{ engine = "web" }}
""")
    return tmp_path / "chorus.toml"


def test_datasets_list_shows_configured_datasets_not_ingested_yet(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "datasets", "list", "--config", str(project))
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and not line.startswith(" ")}
    assert code == 0
    assert "not ingested yet" in rows["handbook"] and "not ingested yet" in rows["faq"]
    assert "2 configured datasets are not ingested yet" in out

    assert run(capsys, "datasets", "ingest", "handbook", "--config", str(project))[0] == 0
    code, out, _ = run(capsys, "datasets", "list", "--config", str(project))
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "not ingested" not in rows["handbook"] and rows["handbook"].split()[-4:-1] == ["config", "1", "0"]
    assert "not ingested yet" in rows["faq"] and "1 configured dataset is not ingested yet" in out

    code, _, err = run(capsys, "datasets", "search", "faq", "returns", "--config", str(project))
    assert code == 1 and err.startswith("chorus: error: no dataset 'faq'") and "datasets ingest faq" in err


def test_config_check_counts_every_kind_of_table(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "config", "check", "--config", str(project))
    assert code == 0
    assert out.strip() == "ok: 1 provider, 1 workspace, 1 bot, 2 datasets, 1 skillset, 1 search engine"


# -- one error form ------------------------------------------------------------------------------------------


def test_every_cli_failure_reads_chorus_error(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[workspaces]]\nid = "w"\nbogus = 1\n')
    code, _, err = run(capsys, "config", "check", "--config", str(bad))
    assert code == 2 and err.startswith("chorus: error: invalid configuration: ") and "bogus" in err

    code, _, err = run(capsys, "datasets", "list", "--workspace", "nope", "--config", str(project))
    assert code == 2 and err == "chorus: error: unknown workspace 'nope'\n"

    code, _, err = run(capsys, "datasets", "ingest", "nope", str(DATA / "*.md"), "--config", str(project))
    assert code == 1 and err == "chorus: error: no dataset 'nope' in workspace 'acme'\n"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.pdf").write_bytes((DATA.parent / "kb" / "broken.pdf").read_bytes())
    store = run(capsys, "datasets", "create", "--config", str(project))[1].strip()
    code, _, err = run(capsys, "datasets", "ingest", store, str(broken / "*.pdf"), "--config", str(project))
    assert code == 1 and err.splitlines()[-1].startswith("chorus: error: broken.pdf not ingested: ")

    state = tmp_path / "state.toml"
    state.write_text(f'[state]\nurl = "postgresql://nobody@127.0.0.1:{free_port()}/none"\nconnect_timeout = 2\n')
    code, _, err = run(capsys, "state", "status", "--config", str(state))
    assert code == 1 and err.startswith("chorus: error: PostgreSQL at ") and "unreachable" in err

    with pytest.raises(SystemExit) as usage:
        main(["keys", "nope"])
    assert usage.value.code == 2 and "chorus keys: error: " in capsys.readouterr().err
