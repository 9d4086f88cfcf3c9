"""Config datasets: incremental ingestion by content hash, and the ``chorus datasets`` CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chorus.cli.main import main
from chorus.contract.config import load_config

DATA = Path(__file__).parent / "data" / "kb"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DATA / "shipping.md", docs / "shipping.md")
    shutil.copy(DATA / "returns.txt", docs / "returns.txt")
    (tmp_path / "chorus.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[[workspaces]]\nid = "acme"\napi_keys = ["k"]\n'
        '[[datasets]]\nid = "handbook"\nworkspace = "acme"\nname = "Handbook"\nsources = ["docs/**/*"]\n'
    )
    monkeypatch.delenv("CHORUS_DATA_DIR", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_incremental_ingest_and_cli(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(project / "chorus.toml")
    code, out, err = run(capsys, "datasets", "ingest", "handbook", "--config", config)
    assert code == 0 and "added 2, updated 0, unchanged 0, removed 0, failed 0" in out
    assert "2/2" in err  # the progress bar
    code, out, _ = run(capsys, "datasets", "ingest", "handbook", "--config", config)
    assert "added 0, updated 0, unchanged 2" in out
    (project / "docs" / "returns.txt").write_text("Returns are accepted within 60 days of delivery.\n")
    (project / "docs" / "shipping.md").unlink()
    (project / "docs" / "broken.pdf").write_bytes((DATA / "broken.pdf").read_bytes())
    code, out, err = run(capsys, "datasets", "ingest", "handbook", "--config", config)
    assert code == 1
    assert "updated 1, unchanged 0, removed 1, failed 1" in out
    assert "broken.pdf" in err
    code, out, _ = run(capsys, "datasets", "search", "handbook", "returns days", "--config", config)
    assert code == 0 and "60 days" in out and "30 days" not in out
    code, out, _ = run(capsys, "datasets", "list", "--config", config)
    assert "handbook" in out and "config" in out


def test_cli_create_ingest_paths_delete(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(project / "chorus.toml")
    code, out, _ = run(capsys, "datasets", "create", "--name", "adhoc", "--config", config)
    store = out.strip()
    assert code == 0 and store.startswith("vs_")
    code, out, _ = run(capsys, "datasets", "ingest", store, str(project / "docs" / "*.md"), "--config", config)
    assert code == 0 and "added 1" in out
    code, out, _ = run(capsys, "datasets", "search", store, "Rotterdam warehouse", "--config", config)
    assert "Rotterdam" in out
    code, out, _ = run(capsys, "datasets", "delete", store, "--config", config)
    assert code == 0
    code, out, err = run(capsys, "datasets", "search", store, "x", "--config", config)
    assert code == 1 and "no dataset" in err


def test_relative_sources_follow_the_config_file(project: Path) -> None:
    config = load_config(project / "chorus.toml")
    assert config.datasets[0].sources == [str(project / "docs/**/*")]
