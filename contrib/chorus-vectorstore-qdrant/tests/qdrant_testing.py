"""Helpers shared by the ``qdrant`` driver tests (imported by name: the tests folder is on sys.path).

Chunk builders and the conformance checks come from :mod:`chorus.testing.vectorstores`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings

from chorus.secrets import dec_hook
from chorus.testing.vectorstores import DriverFactory

#: ``make_store(*, start=True, **raw)``: a driver from raw ``[vector_store]`` settings (conftest.py).
QdrantFactory = DriverFactory[QdrantVectorStore]


class Conformance:
    """The kit's ``StoreFactory`` over ``make_store``: in memory, or in the folder ``data`` of the
    test's directory; ``raw`` settings apply to every store. Remembers the stores it made."""

    def __init__(self, make_store: QdrantFactory, **raw: Any) -> None:
        self.make_store = make_store
        self.raw = raw
        self.made: list[QdrantVectorStore] = []

    async def __call__(self, *, data: str | None = None, dense: bool = True, start: bool = True) -> QdrantVectorStore:
        raw = {**self.raw, "dense": dense} | ({} if data is None else {"path": data})
        store = await self.make_store(start=start, **raw)
        self.made.append(store)
        return store


def settings(**raw: Any) -> QdrantVectorStoreSettings:
    """Settings as a ``[vector_store]`` table would give them (validated the same way)."""
    return msgspec.convert({"driver": "qdrant", **raw}, QdrantVectorStoreSettings, dec_hook=dec_hook)


async def raw_chunks(s: QdrantVectorStore, file_id: str | None = None) -> list[dict[str, Any]]:
    """Every chunk point's payload, visible or not, straight from the collection."""
    from qdrant_client import models

    if not await s._call("collection_exists"):
        return []
    must = [models.FieldCondition(key="kind", match=models.MatchValue(value="chunk"))]
    if file_id is not None:
        must.append(models.FieldCondition(key="file_id", match=models.MatchValue(value=file_id)))
    points, _ = await s._call("scroll", scroll_filter=models.Filter(must=must), limit=10_000, with_payload=True)
    return [p.payload for p in points]
