"""Helpers shared by the ``qdrant`` driver tests (imported by name: the tests folder is on sys.path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from chorus.knowledge.model import Chunk
from chorus.secrets import dec_hook
from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings

StoreFactory = Callable[..., Awaitable[QdrantVectorStore]]

FILLER = [
    "The quarterly report covers revenue and staffing in the northern offices.",
    "Our cafeteria menu changes every Monday with seasonal vegetables.",
    "Parking permits are renewed at the front desk before the end of March.",
    "The printer on the third floor needs toner and a new paper tray.",
    "Holiday schedules are published in the shared calendar each autumn.",
    "Security badges must be worn visibly inside the building at all times.",
]


def settings(**raw: Any) -> QdrantVectorStoreSettings:
    """Settings as a ``[vector_store]`` table would give them (validated the same way)."""
    return msgspec.convert({"driver": "qdrant", **raw}, QdrantVectorStoreSettings, dec_hook=dec_hook)


def chunk(file_id: str, index: int, text: str, *, workspace: str = "acme", dataset: str = "docs",
          vector: list[float] | None = None, **extra: Any) -> Chunk:
    return Chunk(id=f"{file_id}:{index}", workspace=workspace, dataset=dataset, file_id=file_id, index=index,
                 text=text, vector=vector, **extra)


def chunks(file_id: str, texts: list[str], **kw: Any) -> list[Chunk]:
    return [chunk(file_id, i, t, **kw) for i, t in enumerate(texts)]


async def ids(s: QdrantVectorStore, query: str, *, workspace: str = "acme", datasets: list[str] | None = None,
              **kw: Any) -> list[str]:
    """The chunk ids a search returns, best first."""
    return [h.chunk.id for h in await s.search(workspace, datasets or ["docs"], query, **kw)]


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
