"""The PostgreSQL database of a deployment: one asyncpg pool, its schema and its migrations.

Every table lives in one schema (``[state] schema``, default ``chorus``), so a database can hold
several deployments or other applications. Migrations are numbered; :func:`migrate` applies the
missing ones, each in its own transaction, while holding a session advisory lock, so instances that
start together never race (the second waits, then finds nothing to do). ``chorus state migrate``
runs the same function for operators who migrate before rolling out.

A connection problem (server down, restarting, unreachable, pool exhausted past its timeout) is a
:class:`~chorus.contract.errors.StateUnavailable` (503): the request that needed state fails
cleanly, and the pool reconnects on its own once the server is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from chorus.contract.errors import InvalidRequest, StateUnavailable

log = logging.getLogger("chorus.state")
T = TypeVar("T")

#: (version, name, SQL). Append only; never edit a released migration.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "files, file bytes, vector stores, parked turns", """
CREATE TABLE files (
    workspace TEXT NOT NULL, id TEXT NOT NULL, filename TEXT NOT NULL, bytes BIGINT NOT NULL,
    purpose TEXT NOT NULL, created_at BIGINT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (workspace, id)
);
CREATE TABLE file_blobs (
    workspace TEXT NOT NULL, id TEXT NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (workspace, id),
    FOREIGN KEY (workspace, id) REFERENCES files (workspace, id) ON DELETE CASCADE
);
CREATE TABLE vector_stores (
    workspace TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, created_at BIGINT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', origin TEXT NOT NULL DEFAULT 'api', last_active_at BIGINT,
    PRIMARY KEY (workspace, id)
);
CREATE TABLE vector_store_files (
    workspace TEXT NOT NULL, vector_store_id TEXT NOT NULL, file_id TEXT NOT NULL,
    status TEXT NOT NULL, last_error TEXT, created_at BIGINT NOT NULL, chunks INTEGER NOT NULL DEFAULT 0,
    usage_bytes BIGINT NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT '', attributes TEXT NOT NULL DEFAULT '{}',
    source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workspace, vector_store_id, file_id)
);
CREATE INDEX vector_store_files_by_file ON vector_store_files (workspace, file_id);
CREATE TABLE parked_turns (
    workspace TEXT NOT NULL, call_id TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL, turn BYTEA NOT NULL,
    PRIMARY KEY (workspace, call_id)
);
CREATE INDEX parked_turns_expiry ON parked_turns (expires);
"""),
    (2, "shared counters", """
CREATE TABLE counters (
    key TEXT NOT NULL, window_start BIGINT NOT NULL, count BIGINT NOT NULL, expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX counters_expiry ON counters (expires);
"""),
    (3, "responses, conversations, stored chat completions", """
CREATE TABLE responses (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at BIGINT NOT NULL,
    response TEXT NOT NULL, input_items TEXT NOT NULL, context TEXT NOT NULL,
    PRIMARY KEY (workspace, id)
);
CREATE TABLE conversations (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at BIGINT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (workspace, id)
);
CREATE TABLE conversation_items (
    seq BIGSERIAL PRIMARY KEY, workspace TEXT NOT NULL, conversation_id TEXT NOT NULL,
    id TEXT NOT NULL, item TEXT NOT NULL
);
CREATE INDEX conversation_items_by_conversation ON conversation_items (workspace, conversation_id, seq);
CREATE TABLE chat_completions (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at BIGINT NOT NULL, model TEXT NOT NULL,
    metadata TEXT NOT NULL, completion TEXT NOT NULL, messages TEXT NOT NULL,
    PRIMARY KEY (workspace, id)
);
"""),
    (4, "managed API keys, usage records", """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT,
    allowed_models TEXT, rpm BIGINT, tpm BIGINT, budget_amount DOUBLE PRECISION, budget_period TEXT
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace, created_at);
CREATE TABLE usage_records (
    id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, workspace TEXT NOT NULL,
    key_id TEXT NOT NULL, target_kind TEXT NOT NULL, bot TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    calls INTEGER NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL, status TEXT NOT NULL
);
CREATE INDEX usage_records_at ON usage_records (at);
"""),
]

#: What asyncpg raises when the server cannot be used right now (as opposed to a bad query).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (schema names come from configuration)."""
    return '"' + name.replace('"', '""') + '"'


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, userinfo = head.rpartition("//")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}//{user}@{tail}" if user else f"{scheme}//{tail}"


class Database:
    """A pool of connections whose ``search_path`` is the deployment's schema."""

    def __init__(self, url: str, *, schema: str = "chorus", min_size: int = 1, max_size: int = 10,
                 timeout: float = 5.0, command_timeout: float = 30.0, migrate: bool = True) -> None:
        self.url = url
        self.migrate = migrate
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    @property
    def where(self) -> str:
        """The database and schema, password removed (for messages)."""
        return f"{redact(self.url)} (schema {self.schema})"

    async def start(self) -> None:
        """Create the schema if needed, apply missing migrations (or check there are none), open the pool."""
        if self._pool is not None:
            return
        try:
            conn = await asyncpg.connect(self.url, timeout=self.timeout)
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"PostgreSQL at {self.where} is unreachable: {type(exc).__name__}") from None
        try:
            # Under the migration lock: two instances creating the schema at once would otherwise
            # race in the catalog (a unique violation on pg_namespace, not "already exists").
            key = f"{self.schema}:migrate"
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
            await conn.execute(f"SET search_path TO {quote_ident(self.schema)}")
            if self.migrate:
                await migrate(conn, self.schema)
            else:
                missing = await pending(conn)
                if missing:
                    raise StateUnavailable(
                        f"the state schema at {self.where} lacks migrations {missing}: run `chorus state migrate`")
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.url, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout,
            command_timeout=self.command_timeout, server_settings={"search_path": self.schema},
        )

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; server problems become :class:`StateUnavailable` (503)."""
        if self._pool is None:
            raise RuntimeError("the state database is not started")
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except UNAVAILABLE as exc:
            log.warning("state database %s unavailable: %s: %s", self.where, type(exc).__name__, exc)
            raise StateUnavailable("The state store is unavailable; retry shortly.") from None
        except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
            # PostgreSQL text cannot hold NUL (SQLite can): a client value, never a server fault.
            raise InvalidRequest("The request contains a character that cannot be stored (such as NUL).",
                                 code="invalid_characters") from None

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``await fn(conn)`` on a pooled connection."""
        async with self.connection() as conn:
            return await fn(conn)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as conn:
            return str(await conn.execute(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(query, *args)
            return row

    @asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[bool]:
        """Hold the deployment-wide lock ``name`` if it is free; yields whether it was taken.

        A session advisory lock on a connection kept for the duration: a crashed holder's lock is
        released with its connection, so a lock never outlives its instance.
        """
        async with self.connection() as conn:
            key = f"{self.schema}:{name}"
            taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key))
            try:
                yield taken
            finally:
                if taken:
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)


async def pending(conn: asyncpg.Connection) -> list[int]:
    """Versions of :data:`MIGRATIONS` not applied in the connection's schema."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")} if exists else set()
    return [version for version, _, _ in MIGRATIONS if version not in applied]


async def migrate(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Apply the missing migrations under the schema's advisory lock; the versions applied."""
    key = f"{schema}:migrate"
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        missing = set(await pending(conn))
        applied: list[int] = []
        for version, name, sql in MIGRATIONS:
            if version not in missing:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("state schema %s: migration %d applied (%s)", schema, version, name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
