"""The embedded default configuration used by ``chorus serve`` without ``--config``.

* Provider: OpenAI when ``OPENAI_API_KEY`` is set (``OPENAI_BASE_URL`` honoured), otherwise the
  in-process local model of ``chorus-provider-llamacpp`` (Gemma 3 270M).
* Workspace ``default`` whose key is generated on first run, printed once, and stored only as a
  SHA-256 digest in the data directory.
* Bot ``demo`` on that provider, answering from dataset ``chorus-docs`` (the project's own docs,
  ingested incrementally at startup) with citations: ``[n]`` markers, or for answers without
  markers (the local model writes none) attribution by overlap (``citations.attribute``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from chorus.contract.config import Config, parse_config
from chorus.runtime.keys import digest, new_key

KEY_FILE = "default-workspace.key.sha256"
DEMO_BACKSTORY = (
    "You are Chorus Demo, a concise and friendly assistant served by the Chorus gateway. "
    "Answer questions about Chorus from the sources below and cite them as [n]. "
    "Answer in one or two short sentences."
)
#: The local base model answers from an unnumbered context (its driver's completion prompt) and
#: writes no markers: its answers are cited by attribution (``citations.attribute``).
DEMO_BACKSTORY_LOCAL = (
    "You are Chorus Demo, a concise and friendly assistant served by the Chorus gateway. "
    "Answer questions about Chorus from the context below in one short sentence."
)


def docs_dir() -> Path | None:
    """The project's documentation: shipped inside the wheel, or beside ``core/`` in a checkout."""
    import chorus

    package = Path(chorus.__file__).resolve().parent
    for candidate in (package / "docs", package.parents[1] / "docs"):
        if candidate.is_dir() and any(candidate.glob("*.md")):
            return candidate
    return None


def data_dir(configured: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``$CHORUS_DATA_DIR``, else the configured ``data_dir``, else ``$XDG_DATA_HOME/chorus``."""
    env = os.environ if env is None else env
    if env.get("CHORUS_DATA_DIR"):
        return Path(env["CHORUS_DATA_DIR"]).expanduser()
    if configured:
        return Path(configured).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chorus"


def default_workspace_key(directory: Path) -> tuple[str, str | None]:
    """The stored ``sha256:`` digest of the default key and, on first run only, the new clear key."""
    path = directory / KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), None
    key = reset_default_key(directory)
    return digest(key), key


def reset_default_key(directory: Path) -> str:
    """Replace the default workspace's key: store a new key's digest (owner-only, atomically) and
    return the new clear key, which is never stored. A server already running keeps accepting the
    old key until it restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KEY_FILE
    key = new_key()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(digest(key) + "\n")
    os.replace(tmp, path)
    return key


def default_config(env: Mapping[str, str] | None = None) -> tuple[Config, str | None]:
    """The embedded configuration and the freshly generated key (``None`` after the first run)."""
    env = os.environ if env is None else env
    directory = data_dir(env=env)
    key_digest, new = default_workspace_key(directory)
    if env.get("OPENAI_API_KEY"):
        provider = {
            "id": "openai",
            "driver": "openai",
            "base_url": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            "api_key": "${OPENAI_API_KEY}",
            "models": ["gpt-4o-mini", "gpt-4o", "*"],
        }
        model, backstory = "openai/gpt-4o-mini", DEMO_BACKSTORY
        retrieval = {"top_k": 3, "max_context_chars": 3000}
    else:
        # a 270M base model often copies the wrong span of its sources or invents a value: the local
        # demo quotes the passage that answers (answer_style "quote", benchmarks/demo_quality.py)
        provider = {"id": "local", "driver": "llamacpp", "models": ["gemma-3-270m"], "answer_style": "quote"}
        model, backstory = "local/gemma-3-270m", DEMO_BACKSTORY_LOCAL
        retrieval = {"top_k": 3, "max_context_chars": 3600}
    docs = docs_dir()
    datasets = [{"id": "chorus-docs", "workspace": "default", "name": "Chorus documentation",
                 "sources": [str(docs / "*.md")]}] if docs is not None else []
    raw = {
        "data_dir": str(directory),
        "providers": [provider],
        "workspaces": [{"id": "default", "name": "Default workspace", "api_keys": [key_digest]}],
        "datasets": datasets,
        "bots": [
            {
                "id": "demo",
                "workspace": "default",
                "name": "Chorus Demo",
                "description": "Answers questions about Chorus from its documentation, with citations",
                "model": model,
                "backstory": backstory,
                "params": {"temperature": 0.2, "max_tokens": 200},
                "datasets": [d["id"] for d in datasets],
                "retrieval": retrieval,
                # answers without [n] markers are cited by their overlap with the sources
                "citations": {"attribute": True},
            }
        ],
    }
    return parse_config(raw, env=env, source="embedded default config"), new
