"""The knowledge service: ingestion into datasets, retrieval, and config-declared datasets.

Ingestion of one file is atomic: it is parsed, chunked and embedded first, then all its chunks
replace the previous ones in a single :meth:`VectorStoreDriver.replace_file` call, and only then is
the catalog updated. A file that cannot be parsed is recorded as ``failed`` with the reason; the
dataset keeps whatever it had.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from chorus.contract.config import DatasetConfig, KnowledgeConfig
from chorus.contract.documents import Chunk, SearchHit
from chorus.contract.vectorstores import VectorStoreDriver
from chorus.storage.catalog import Catalog, FileRecord, StoreFileRecord

log = logging.getLogger("chorus.knowledge")

Embedder = Callable[[list[str]], Awaitable[list[list[float]]]]
Progress = Callable[[str, int, int], None]


class IngestSummary(msgspec.Struct, kw_only=True):
    """What a dataset sync did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = []  # (file, reason)
    chunks: int = 0


class Knowledge:
    """Datasets of one deployment: catalog + vector store + optional embedder.

    The catalog belongs to the state layer, which opens and closes it; this service starts and
    stops the vector store.
    """

    def __init__(self, catalog: Catalog, store: VectorStoreDriver, config: KnowledgeConfig,
                 embedder: Embedder | None = None) -> None:
        self.catalog = catalog
        self.store = store
        self.config = config
        self.embedder = embedder

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    # -- ingestion ------------------------------------------------------------------------------

    async def _chunks(self, workspace: str, dataset: str, file: FileRecord, data: bytes,
                      attributes: dict[str, Any], source: str) -> list[Chunk]:
        from chorus.runtime.knowledge.chunking import chunk_document
        from chorus.runtime.knowledge.parsing import parse

        def work() -> list[Chunk]:
            document = parse(data, file.filename)
            return chunk_document(
                document, workspace=workspace, dataset=dataset, file_id=file.id, source=source or file.filename,
                attributes=attributes, max_chars=self.config.chunk_chars, overlap_chars=self.config.chunk_overlap,
            )

        chunks = await asyncio.to_thread(work)
        if self.embedder is not None and chunks:
            vectors: list[list[float]] = []
            for start in range(0, len(chunks), 64):
                vectors.extend(await self.embedder([c.text for c in chunks[start:start + 64]]))
            chunks = [msgspec.structs.replace(c, vector=v) for c, v in zip(chunks, vectors, strict=True)]
        return chunks

    async def attach(self, workspace: str, dataset: str, file: FileRecord, *,
                     attributes: dict[str, Any] | None = None, source: str = "") -> StoreFileRecord:
        """Ingest ``file`` into ``dataset`` (replacing an earlier version of it) and record the outcome."""
        from chorus.runtime.knowledge.parsing import ParseError

        attributes = attributes or {}
        now = int(time.time())
        base = StoreFileRecord(workspace=workspace, vector_store_id=dataset, file_id=file.id, status="in_progress",
                               last_error=None, created_at=now, chunks=0, usage_bytes=0, sha256=file.sha256,
                               attributes=attributes, source=source)
        previous = await self.catalog.get_store_file(workspace, dataset, file.id)
        if (previous is not None and previous.status == "completed" and previous.sha256 == file.sha256
                and previous.attributes == attributes and previous.source == source):
            return previous  # same content, same attributes: re-ingesting is a no-op
        try:
            data = await self.catalog.read_file(workspace, file.id)
            chunks = await self._chunks(workspace, dataset, file, data, attributes, source)
            await self.store.replace_file(workspace, dataset, file.id, chunks)
        except ParseError as exc:
            return await self._failed(base, previous, "unsupported_file", f"{file.filename}: {exc}")
        except Exception as exc:
            log.exception("ingesting %s into %s failed", file.filename, dataset)
            return await self._failed(base, previous, "server_error",
                                      f"{file.filename}: ingestion failed ({type(exc).__name__})")
        record = msgspec.structs.replace(base, status="completed", chunks=len(chunks),
                                         usage_bytes=sum(len(c.text.encode()) for c in chunks))
        await self.catalog.put_store_file(record)
        return record

    async def _failed(self, base: StoreFileRecord, previous: StoreFileRecord | None, code: str,
                      message: str) -> StoreFileRecord:
        """Record a failed ingestion; a previously ingested version keeps its chunks and counts."""
        error = {"code": code, "message": message}
        if previous is not None and previous.status == "completed":
            record = msgspec.structs.replace(previous, status="failed", last_error=error)
        else:
            record = msgspec.structs.replace(base, status="failed", last_error=error)
        await self.catalog.put_store_file(record)
        return record

    async def detach(self, workspace: str, dataset: str, file_id: str) -> bool:
        """Remove every chunk of a file from a dataset and forget the link."""
        await self.store.delete_file(workspace, dataset, file_id)
        return await self.catalog.delete_store_file(workspace, dataset, file_id)

    async def delete_dataset(self, workspace: str, dataset: str) -> bool:
        await self.store.delete_dataset(workspace, dataset)
        return await self.catalog.delete_store(workspace, dataset)

    async def delete_file(self, workspace: str, file_id: str) -> bool:
        """Delete an uploaded file and its chunks in every dataset."""
        for dataset in await self.catalog.stores_with_file(workspace, file_id):
            await self.detach(workspace, dataset, file_id)
        return await self.catalog.delete_file(workspace, file_id)

    # -- retrieval ------------------------------------------------------------------------------

    async def search(self, workspace: str, datasets: list[str], query: str, *, k: int = 8,
                     filters: dict[str, Any] | None = None, min_score: float = 0.0) -> list[SearchHit]:
        """Hybrid when an embedder is configured, lexical otherwise."""
        if not query.strip() or not datasets:
            return []
        vector = (await self.embedder([query]))[0] if self.embedder is not None else None
        hits = await self.store.search(workspace, datasets, query, vector=vector, k=k, filters=filters)
        return [h for h in hits if h.score >= min_score]

    # -- datasets declared in configuration -----------------------------------------------------

    async def sync_dataset(self, dataset: DatasetConfig, progress: Progress | None = None) -> IngestSummary:
        """Ingest a config dataset's sources incrementally; files gone from the sources are removed."""
        await self.catalog.create_store(dataset.workspace, dataset.name or dataset.id, {}, store_id=dataset.id, origin="config")
        return await self.ingest_paths(dataset.workspace, dataset.id, dataset.sources, progress, remove_missing=True)

    async def ingest_paths(self, workspace: str, dataset: str, patterns: list[str], progress: Progress | None = None,
                           *, remove_missing: bool = False) -> IngestSummary:
        """Ingest files matching ``patterns``; unchanged files (by SHA-256) that ingested fine are skipped.

        File ids derive from the dataset and display path, so a changed file replaces its earlier
        version. With ``remove_missing``, files the dataset got from paths that no longer match are
        deleted.
        """
        summary = IngestSummary()
        paths = expand_sources(patterns)
        known = {r.source: r for r in await self.catalog.list_store_files(workspace, dataset)}
        for number, (relative, path) in enumerate(paths, start=1):
            if progress is not None:
                progress(relative, number, len(paths))
            data = await asyncio.to_thread(path.read_bytes)
            digest = hashlib.sha256(data).hexdigest()
            existing = known.pop(relative, None)
            if existing is not None and existing.sha256 == digest and existing.status == "completed":
                summary.unchanged += 1
                continue
            file_id = "file-" + hashlib.sha256(f"{dataset}\0{relative}".encode()).hexdigest()[:24]
            file = await self.catalog.add_file(workspace, path.name, data, "assistants", digest, file_id=file_id)
            record = await self.attach(workspace, dataset, file, source=relative)
            if record.status == "failed":
                summary.failed.append((relative, (record.last_error or {}).get("message", "failed")))
            elif existing is None:
                summary.added += 1
            else:
                summary.updated += 1
            summary.chunks += record.chunks
        if remove_missing:
            for gone in known.values():
                await self.delete_file(workspace, gone.file_id)
                summary.removed += 1
        return summary


def expand_sources(patterns: list[str]) -> list[tuple[str, Path]]:
    """Files matching the glob patterns (``**`` is recursive), as ``(display path, path)`` sorted.

    The display path is relative to the pattern's fixed leading directories, so it is stable when
    the deployment moves and never reveals the server's directory layout.
    """
    found: dict[str, Path] = {}
    for pattern in patterns:
        base = _glob_base(pattern)
        for match in sorted(glob.glob(pattern, recursive=True)):
            path = Path(match)
            if path.is_file():
                found.setdefault(os.path.relpath(path, base), path)
    return sorted(found.items())


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # a plain file path: its directory
        fixed = fixed[:-1]
    return Path(*fixed) if fixed else Path(".")
