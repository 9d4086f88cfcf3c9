"""SQL schema of the ``sqlite`` store: tables, FTS5 index, triggers, version check and shared statements."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
_TOKENIZER = re.compile(r"^[A-Za-z0-9_ ]+$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    file_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    chunk_id TEXT NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    headings TEXT NOT NULL,
    url TEXT NOT NULL,
    source TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    attributes TEXT NOT NULL,
    UNIQUE (workspace, dataset, file_id, idx)
);
CREATE TABLE IF NOT EXISTS chunk_vectors (
    id INTEGER PRIMARY KEY,
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_vectors_scope ON chunk_vectors (workspace, dataset);
CREATE TABLE IF NOT EXISTS datasets (
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    logged_after INTEGER NOT NULL,
    PRIMARY KEY (workspace, dataset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deletions (
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (workspace, dataset, version, lo)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, headings, content='chunks', content_rowid='id', tokenize='{tokenizer}'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, title, headings) VALUES (new.id, new.text, new.title, new.headings);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, title, headings)
        VALUES ('delete', old.id, old.text, old.title, old.headings);
    DELETE FROM chunk_vectors WHERE id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS chunks_au BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: replace the file');
END;
"""

_INSERT = (
    'INSERT INTO chunks (workspace, dataset, file_id, idx, chunk_id, text, title, headings, url, source, start, "end",'
    " attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_HYDRATE = (
    'SELECT id, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start, "end", attributes'
    " FROM chunks WHERE +workspace = ? AND id IN ({marks})"
)


def ensure_schema(db: sqlite3.Connection, path: Path, tokenizer: str) -> None:
    """Create the schema on a new file (``tokenizer`` for FTS5), or check an existing file's version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise RuntimeError(f"{path}: unknown vector store schema version {version}")
    db.executescript(SCHEMA.replace("{tokenizer}", tokenizer))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
