"""Fixtures: drivers on Qdrant's embedded local mode (in memory or in a temporary directory).

Nothing here imports qdrant-client at import time: each test module skips itself when it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest_plugins = ["chorus.testing.fixtures"]  # scripted_upstream, serve_chorus (the end-to-end test)

if TYPE_CHECKING:
    from chorus_vectorstore_qdrant import QdrantVectorStore
    from qdrant_testing import QdrantFactory


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[QdrantFactory]:
    """``await make_store(**raw)``: a driver from raw settings (default: in memory), started unless
    ``start=False``; the started ones are closed at teardown."""
    from chorus_vectorstore_qdrant import QdrantVectorStore
    from qdrant_testing import settings

    from chorus.testing.vectorstores import DriverFactory

    def build(**raw: Any) -> QdrantVectorStore:
        if "path" not in raw and "url" not in raw:
            raw.setdefault("location", ":memory:")
        return QdrantVectorStore(settings(**raw), tmp_path)

    async with DriverFactory(build) as make:
        yield make


@pytest.fixture
async def store(make_store: QdrantFactory) -> QdrantVectorStore:
    return await make_store()
