"""The vector store driver interface (entry point group ``chorus.vector_stores``).

One driver instance serves the whole deployment (``[vector_store] driver = "<name>"``, default
``sqlite``). Every method takes the workspace and filters by it *inside* the store query, so a
tenant can never read another tenant's chunks. Drivers must make :meth:`replace_file` atomic: after
a crash or error the file's previous chunks are intact and no partial new set is visible.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from chorus.contract.config import Strict
from chorus.contract.documents import Chunk, SearchHit


class VectorStoreSettings(Strict):
    """Keys every ``[vector_store]`` table may use; drivers subclass to add their own."""

    driver: str = "sqlite"


class VectorStoreDriver(abc.ABC):
    """Stores chunks and answers lexical, dense or hybrid searches over them."""

    settings_type: ClassVar[type[VectorStoreSettings]] = VectorStoreSettings

    def __init__(self, settings: VectorStoreSettings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, create schemas. Called once before serving."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    @abc.abstractmethod
    async def replace_file(self, workspace: str, dataset: str, file_id: str, chunks: list[Chunk]) -> None:
        """Atomically replace every chunk of ``file_id`` in ``dataset`` by ``chunks`` (may be empty)."""

    @abc.abstractmethod
    async def delete_file(self, workspace: str, dataset: str, file_id: str) -> int:
        """Delete every chunk of ``file_id`` in ``dataset``; returns how many were removed."""

    @abc.abstractmethod
    async def delete_dataset(self, workspace: str, dataset: str) -> int:
        """Delete every chunk of ``dataset``; returns how many were removed."""

    @abc.abstractmethod
    async def search(
        self,
        workspace: str,
        datasets: list[str],
        query: str,
        *,
        vector: list[float] | None = None,
        k: int = 8,
        filters: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The best ``k`` chunks of ``datasets`` for ``query``, best first.

        Lexical (BM25-style) always; when ``vector`` is given and the store holds vectors, also
        dense similarity, fused by reciprocal rank. ``filters`` use the OpenAI vector store filter
        shape: ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": ..., "value": ...}``
        or ``{"type": "and"|"or", "filters": [...]}`` over chunk ``attributes``.
        """

    @abc.abstractmethod
    async def count(self, workspace: str, dataset: str, file_id: str | None = None) -> int:
        """How many chunks ``dataset`` (or one of its files) holds."""
