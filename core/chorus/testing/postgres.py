"""A scratch PostgreSQL schema for tests of the state layer and of plugins that use it.

``postgres_url()`` is ``$CHORUS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
when a server answers there, else ``None`` with :data:`SKIP_REASON` saying what to start.
``scratch_schema(url)`` yields a fresh schema name and drops the schema afterwards.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SKIP_REASON = (
    "no PostgreSQL at $CHORUS_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test): "
    "start one (e.g. `apt-get install postgresql`, trust auth on 127.0.0.1) or point the variable at one"
)
_checked: dict[str, bool] = {}


def configured_url() -> str:
    return os.environ.get("CHORUS_TEST_POSTGRES_URL") or DEFAULT_URL


async def _reachable(url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:  # any failure means "not usable for tests"
        return False
    await conn.close()
    return True


def postgres_url() -> str | None:
    """The test server's URL if it answers (checked once per process), else ``None``."""
    url = configured_url()
    if url not in _checked:
        _checked[url] = asyncio.run(_reachable(url))
    return url if _checked[url] else None


_claimed: list[tuple[str, str]] = []


def claim_schema(url: str, prefix: str = "t", key: str | None = None) -> str:
    """A schema name, dropped (if created) when the process exits: unique, or the same for the same ``key``."""
    token = hashlib.sha256(f"{os.getpid()}:{key}".encode()).hexdigest()[:12] if key else secrets.token_hex(6)
    name = f"{prefix}_{token}"
    if not _claimed:
        atexit.register(_drop_claimed)
    if (url, name) not in _claimed:
        _claimed.append((url, name))
    return name


def _drop_claimed() -> None:
    async def drop() -> None:
        import asyncpg

        for url in {u for u, _ in _claimed}:
            try:
                conn = await asyncpg.connect(url, timeout=5)
            except Exception:  # the server is gone: nothing to clean
                continue
            try:
                for _, name in (c for c in _claimed if c[0] == url):
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await conn.close()

    asyncio.run(drop())


@asynccontextmanager
async def scratch_schema(url: str, prefix: str = "t") -> AsyncIterator[str]:
    """A unique schema name; the schema (if created) is dropped afterwards."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        yield name
    finally:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
