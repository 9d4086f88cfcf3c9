"""The ``pgvector`` store's schema: migrations applied at start under an advisory lock, and DDL helpers.

Everything lives in one schema (``[vector_store] schema``, default ``chorus_vectors``): ``chunks``
(one row per chunk, its tsvector, its per-term frequencies and its embedding), ``term_stats``
(document frequency of each lexeme per workspace), ``workspace_stats`` (chunk count and summed
length per workspace), ``meta`` (the text search configuration the schema was built with) and
``migrations``. Dense vectors of every dimension share the ``embedding`` column; each dimension
gets its own partial HNSW index (an expression index on ``embedding::vector(n)`` for rows with
``dims = n``), created when the first vectors of that size are written.
"""

from __future__ import annotations

import hashlib
import re

import asyncpg

from chorus.errors import ConfigError

#: (version, name, SQL). Append only; never edit a released migration.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "chunks, per-workspace term statistics, meta", """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace TEXT NOT NULL, dataset TEXT NOT NULL, file_id TEXT NOT NULL, idx INTEGER NOT NULL,
    chunk_id TEXT NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL, headings TEXT[] NOT NULL,
    url TEXT NOT NULL, source TEXT NOT NULL, start_offset BIGINT NOT NULL, end_offset BIGINT NOT NULL,
    attributes JSONB NOT NULL, attributes_json TEXT NOT NULL,
    tsv TSVECTOR NOT NULL, terms JSONB NOT NULL, length REAL NOT NULL,
    dims INTEGER, embedding vector,
    UNIQUE (workspace, dataset, file_id, idx)
);
-- Rows up to ~8 KB stay uncompressed inline: BM25 reads each candidate's term frequencies (jsonb) and
-- exact dense scans read vectors; decompressing them per access cost more than the memory saved.
ALTER TABLE chunks SET (toast_tuple_target = 8160);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE TABLE term_stats (
    workspace TEXT NOT NULL, term TEXT NOT NULL, df INTEGER NOT NULL,
    PRIMARY KEY (workspace, term)
);
CREATE TABLE workspace_stats (
    workspace TEXT PRIMARY KEY, chunks BIGINT NOT NULL, length DOUBLE PRECISION NOT NULL
);
"""),
]

#: Largest dimension pgvector's HNSW indexes as ``vector``; up to ``MAX_HALFVEC_DIMS`` as ``halfvec``.
MAX_VECTOR_DIMS = 2000
MAX_HALFVEC_DIMS = 4000
_INDEX_NAME = re.compile(r"chunks_hnsw_(\d+)")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (names are validated before they get here too)."""
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str, name: str) -> int:
    """A 64-bit advisory lock key for ``name`` within ``schema``."""
    digest = hashlib.blake2b(f"chorus-pgvector\0{schema}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def index_type(dims: int) -> str | None:
    """The type an HNSW index of ``dims``-dimension vectors casts to, or ``None`` (searched exactly)."""
    if dims <= MAX_VECTOR_DIMS:
        return "vector"
    if dims <= MAX_HALFVEC_DIMS:
        return "halfvec"
    return None


async def extension_schema(conn: asyncpg.Connection) -> str | None:
    """The schema pgvector's types live in, or ``None`` when the extension is not installed."""
    found: str | None = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
    return found


async def migrate(conn: asyncpg.Connection, schema: str, text_search_config: str) -> str:
    """Create or upgrade the schema under an advisory lock; returns pgvector's schema.

    Two instances starting together take turns: the second finds the migrations applied. The
    extension is created when missing (which needs the privilege to do so).
    """
    key = lock_key(schema, "migrate")
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        ext = await extension_schema(conn)
        if ext is None:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except asyncpg.PostgresError as exc:
                raise ConfigError(
                    f"vector_store: the PostgreSQL server has no usable pgvector extension ({exc}). Install pgvector "
                    "on the server (e.g. the postgresql-<version>-pgvector package) or have an administrator run "
                    "CREATE EXTENSION vector in this database") from None
            ext = await extension_schema(conn)
            assert ext is not None
        try:
            await conn.fetchval("SELECT $1::text::regconfig", text_search_config)
        except asyncpg.PostgresError:
            raise ConfigError(f"vector_store.text_search_config: the server has no text search configuration "
                              f"{text_search_config!r} (see \\dF in psql)") from None
        q = quote_ident(schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {q}.migrations ("
                           "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        applied = {r[0] for r in await conn.fetch(f"SELECT version FROM {q}.migrations")}
        for version, name, sql in MIGRATIONS:
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {q}, {quote_ident(ext)}")
                await conn.execute(sql)
                await conn.execute(f"INSERT INTO {q}.migrations (version, name) VALUES ($1, $2)", version, name)
        recorded = await conn.fetchval(f"SELECT value FROM {q}.meta WHERE key = 'text_search_config'")
        if recorded is None:
            await conn.execute(f"INSERT INTO {q}.meta (key, value) VALUES ('text_search_config', $1)", text_search_config)
        elif recorded != text_search_config:
            raise ConfigError(
                f"vector_store.text_search_config: schema {schema!r} was built with {recorded!r}, not "
                f"{text_search_config!r}; use another schema or keep {recorded!r} (stored lexemes would not match queries)")
        return ext
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def indexed_dimensions(conn: asyncpg.Connection, schema: str) -> set[int]:
    """The dimensions that already have an HNSW index in ``schema``."""
    rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'chunks'", schema)
    return {int(m.group(1)) for r in rows if (m := _INDEX_NAME.fullmatch(r[0]))}


async def create_index(conn: asyncpg.Connection, schema: str, dims: int, m: int, ef_construction: int) -> None:
    """The partial HNSW index (cosine) of ``dims``-dimension vectors, if missing, under the schema's DDL lock."""
    kind = index_type(dims)
    key = lock_key(schema, "migrate")
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        q = quote_ident(schema)
        # dims, m and ef_construction are validated integers; the index expression must match the
        # one searches order by (PgvectorStore._dense), or the planner cannot use the index.
        if kind is None:
            sql = f"CREATE INDEX IF NOT EXISTS chunks_hnsw_{int(dims)} ON {q}.chunks (dims) WHERE dims = {int(dims)}"
        else:
            sql = (f"CREATE INDEX IF NOT EXISTS chunks_hnsw_{int(dims)} ON {q}.chunks USING hnsw "
                   f"((embedding::{kind}({int(dims)})) {kind}_cosine_ops) WITH (m = {int(m)}, "
                   f"ef_construction = {int(ef_construction)}) WHERE dims = {int(dims)}")
        await conn.execute(sql)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
