"""Fixtures: drivers on Qdrant's embedded local mode (in memory or in a temporary directory).

Nothing here imports qdrant-client at import time: each test module skips itself when it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from qdrant_testing import StoreFactory

    from chorus_vectorstore_qdrant import QdrantVectorStore


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Started drivers from raw settings (default: in memory); all are closed at teardown."""
    from qdrant_testing import settings

    from chorus_vectorstore_qdrant import QdrantVectorStore

    made: list[QdrantVectorStore] = []

    async def make(**raw: Any) -> QdrantVectorStore:
        if "path" not in raw and "url" not in raw:
            raw.setdefault("location", ":memory:")
        store = QdrantVectorStore(settings(**raw), tmp_path)
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def store(make_store: StoreFactory) -> QdrantVectorStore:
    return await make_store()
