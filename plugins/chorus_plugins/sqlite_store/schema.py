"""SQL schema of the ``sqlite`` store: tables, FTS5 index, triggers, version check and shared statements."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from chorus.sqlitedb import immediate

log = logging.getLogger("chorus.vectorstore.sqlite")

SCHEMA_VERSION = 2
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
CREATE TABLE IF NOT EXISTS lexical_indexes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS chunks_vectors_ad AFTER DELETE ON chunks BEGIN
    DELETE FROM chunk_vectors WHERE id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS chunks_au BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: replace the file');
END;
"""

_LEXICAL_INDEX = """
CREATE VIRTUAL TABLE {name} USING fts5(
    text, title, headings, content='chunks', content_rowid='id', tokenize='{tokenizer}'
)"""

_INSERT = (
    'INSERT INTO chunks (workspace, dataset, file_id, idx, chunk_id, text, title, headings, url, source, start, "end",'
    " attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_HYDRATE = (
    'SELECT id, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start, "end", attributes'
    " FROM chunks WHERE +workspace = ? AND id IN ({marks})"
)


def ensure_schema(db: sqlite3.Connection, path: Path, tokenizer: str) -> str:
    """Create the schema on a new file, or check (and migrate) an existing file's version.

    Returns the tokenizer of the store's FTS5 indexes: ``tokenizer`` on a new file, the one the
    file was created with otherwise (a different configured one is logged and not used).
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, SCHEMA_VERSION):
        raise RuntimeError(f"{path}: unknown vector store schema version {version}")
    with immediate(db):
        for statement in _statements(SCHEMA):
            db.execute(statement)
        if version == 1:
            _migrate_from_v1(db, tokenizer)
        db.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('tokenizer', ?)", (tokenizer,))
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    (stored,) = db.execute("SELECT value FROM store_meta WHERE key = 'tokenizer'").fetchone()
    if stored != tokenizer:
        log.warning("%s: its full-text indexes use tokenizer %r; the configured %r applies to new stores only",
                    path, stored, tokenizer)
    return str(stored)


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (triggers kept whole), so they run inside one transaction."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]


def _migrate_from_v1(db: sqlite3.Connection, configured: str) -> None:
    """Version 1 kept one FTS5 index for every workspace, so BM25 statistics mixed tenants.

    Move to one index per workspace with the old index's tokenizer (``configured`` if it cannot
    be read), filled from ``chunks``, in the caller's transaction.
    """
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
    found = re.search(r"tokenize='([^']*)'", sql[0]) if sql else None
    tokenizer = found.group(1) if found else configured
    db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('tokenizer', ?)", (tokenizer,))
    db.execute("DROP TRIGGER IF EXISTS chunks_ai")
    db.execute("DROP TRIGGER IF EXISTS chunks_ad")
    db.execute("DROP TABLE IF EXISTS chunks_fts")
    for (workspace,) in db.execute("SELECT DISTINCT workspace FROM chunks").fetchall():
        name = lexical_index(db, workspace, create=True, tokenizer=tokenizer)
        assert name is not None
        db.execute(f"INSERT INTO {name} (rowid, text, title, headings)"
                   " SELECT id, text, title, headings FROM chunks WHERE workspace = ?", (workspace,))


def lexical_index(db: sqlite3.Connection, workspace: str, *, create: bool = False,
                  tokenizer: str = "") -> str | None:
    """The name of ``workspace``'s FTS5 index, created (inside the caller's transaction) if asked.

    Each workspace has its own index, so BM25 statistics (document counts, lengths, term
    frequencies) never mix tenants. Names come from an integer id, never from the workspace.
    """
    row = db.execute("SELECT id FROM lexical_indexes WHERE workspace = ?", (workspace,)).fetchone()
    if row is None:
        if not create:
            return None
        if not _TOKENIZER.match(tokenizer):  # it goes into DDL: letters, digits, '_' and spaces only
            raise RuntimeError(f"invalid FTS5 tokenizer {tokenizer!r}")
        (index_id,) = db.execute("INSERT INTO lexical_indexes (workspace) VALUES (?) RETURNING id",
                                 (workspace,)).fetchone()
        name = f"chunks_fts_{int(index_id)}"
        db.execute(_LEXICAL_INDEX.format(name=name, tokenizer=tokenizer))
        return name
    return f"chunks_fts_{int(row[0])}"
