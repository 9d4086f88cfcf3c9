"""The ``qdrant`` vector store driver: one collection, sparse BM25 + dense vectors, RRF by Qdrant.

Contracts (see ``README.md`` for the reasoning):

* Tenancy: every query, count and delete filters by ``workspace`` inside the Qdrant request, and
  file records are addressed by ids derived from the workspace.
* :meth:`QdrantVectorStore.replace_file` writes the new chunks under a fresh *write* (invisible
  until the file's record names it), then moves the record to it with one conditional upsert (only
  if the record's generation is older: records only move forward), then deletes the chunks the
  record outdates. A failure before the move deletes the partial new write and leaves the old one;
  a crash leaves only invisible chunks, removed by the next write or delete of the file (outdated
  ones also by a search that meets them).
* Searches return only chunks of their file's current write, so a search never mixes two versions
  of a file nor sees part of one.
* Qdrant calls are synchronous client calls run in worker threads (one thread for the embedded
  local mode, which is not thread-safe; ``threads`` for a server), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from qdrant_client import QdrantClient, models

from chorus.errors import ConfigError
from chorus.vectorstores import Chunk, SearchHit, VectorStoreDriver, VectorStoreSettings
from chorus_vectorstore_qdrant import points as pt
from chorus_vectorstore_qdrant.filters import compile_filter
from chorus_vectorstore_qdrant.lexical import Analyzer
from chorus_vectorstore_qdrant.settings import QdrantVectorStoreSettings

log = logging.getLogger("chorus.vectorstore.qdrant")

T = TypeVar("T")

LEXICAL, DENSE = "lexical", "dense"
FORMAT = 1
REFRESH_SECONDS = 5.0   # how often dense searches re-check a collection that had no dense vector
MAX_ATTEMPTS = 4        # searches re-run when a file moved on meanwhile, or invisible chunks crowded them
SCROLL_PAGE = 1000


def _match(key: str, value: str | int | bool) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _older_than(generation: int) -> models.FieldCondition:
    return models.FieldCondition(key="generation", range=models.Range(lt=generation))


def _outdated_by(record: pt.FileRecord) -> models.Filter:
    """Chunks that ``record`` outdates: of its generation or older, and not its write."""
    return models.Filter(must=[models.FieldCondition(key="generation", range=models.Range(lte=record.generation))],
                         must_not=[_match("write", record.write)])


def _file_chunks(workspace: str, dataset: str, file_id: str, *extra: models.Condition) -> models.Filter:
    return models.Filter(must=[_match("kind", pt.CHUNK), _match("workspace", workspace), _match("dataset", dataset),
                               _match("file_id", file_id), *extra])


@dataclass(frozen=True)
class Layout:
    """What the collection holds: the dense vector size, if it has dense vectors."""

    dense_dim: int | None


def usable_vector(vector: Sequence[float] | None) -> list[float] | None:
    """``vector`` as floats when it can be ranked by cosine (finite, not all zero), else ``None``."""
    if not vector:
        return None
    values = [float(x) for x in vector]
    norm = math.fsum(x * x for x in values)
    return values if math.isfinite(norm) and norm > 0 else None


class QdrantVectorStore(VectorStoreDriver):
    """Chunks in one Qdrant collection; lexical (sparse BM25), dense and hybrid (RRF) search."""

    settings_type: ClassVar[type[VectorStoreSettings]] = QdrantVectorStoreSettings
    settings: QdrantVectorStoreSettings

    def __init__(self, settings: VectorStoreSettings, data_dir: Path) -> None:
        super().__init__(settings, data_dir)
        assert isinstance(settings, QdrantVectorStoreSettings)
        if settings.idf == "workspace" and not hasattr(models, "IdfCorpusParams"):
            raise ConfigError("vector_store.idf = \"workspace\" needs qdrant-client 1.20 or newer")
        self.collection = settings.collection
        self.path: Path | None = None
        if settings.url is None and settings.location is None:
            path = Path(settings.path or "qdrant")
            self.path = path if path.is_absolute() else data_dir / path
        self.analyzer = Analyzer(
            settings.stemmer, k1=settings.bm25_k1, b=settings.bm25_b, avg_len=settings.bm25_avg_len,
            title_weight=settings.title_weight, headings_weight=settings.headings_weight,
        )
        self._client: QdrantClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._layout: Layout | None = None
        self._checked_at = -math.inf
        self._layout_lock: asyncio.Lock | None = None
        self._generations = pt.Generations()

    # -- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> QdrantClient:
        s = self.settings
        if s.url is not None:
            return QdrantClient(url=s.url, api_key=s.api_key.get() if s.api_key else None, prefer_grpc=s.prefer_grpc,
                                timeout=math.ceil(s.timeout))
        if s.location is not None:
            return QdrantClient(location=s.location)
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return QdrantClient(path=str(self.path))
        except RuntimeError as exc:
            if "already accessed by another instance" not in str(exc):
                raise
            raise RuntimeError(
                f"the Qdrant directory {self.path} is in use by another process: embedded mode serves one "
                "process, so with `chorus serve --workers N` set `[vector_store] url` to a Qdrant server"
            ) from None

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = ThreadPoolExecutor(1 if self.settings.embedded else self.settings.threads,
                                        thread_name_prefix="chorus-qdrant")
        self._layout_lock = asyncio.Lock()
        try:
            self._client = await self._run(self._connect)
            if await self._refresh() is not None:
                await self._ensure_indexes()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        pool, client = self._pool, self._client
        self._pool = self._client = None
        self._layout, self._checked_at = None, -math.inf
        if pool is None:
            return
        try:
            if client is not None:
                await asyncio.get_running_loop().run_in_executor(pool, client.close)
        finally:
            await asyncio.to_thread(pool.shutdown, wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            raise RuntimeError("vector store is not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """``client.<method>(collection_name=..., **kwargs)`` on a worker thread."""
        if self._client is None:
            raise RuntimeError("vector store is not started")
        return await self._run(partial(getattr(self._client, method), collection_name=self.collection, **kwargs))

    # -- the collection -----------------------------------------------------------------------

    async def _refresh(self) -> Layout | None:
        """Re-read whether the collection exists and its dense size; check its analyzer signature."""
        self._checked_at = time.monotonic()
        if not await self._call("collection_exists"):
            self._layout = None
            return None
        info = await self._call("get_collection")
        params = info.config.params
        sparse = params.sparse_vectors or {}
        if LEXICAL not in sparse:
            raise ConfigError(f"vector_store: Qdrant collection {self.collection!r} exists but was not made by this "
                              "driver (no 'lexical' sparse vector); choose another `collection`")
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        dense = vectors.get(DENSE)
        meta = await self._call("retrieve", ids=[pt.META_ID], with_payload=True)
        signature = self.analyzer.signature
        if not meta:
            await self._write_meta()
        elif meta[0].payload.get("analyzer") != signature:
            raise ConfigError(
                f"vector_store: collection {self.collection!r} was indexed with {meta[0].payload.get('analyzer')}, "
                f"this configuration uses {signature} (check `stemmer`); use another `collection` or re-ingest")
        self._layout = Layout(dense.size if dense is not None else None)
        return self._layout

    async def _write_meta(self) -> None:
        payload = {"kind": pt.META, "format": FORMAT, "analyzer": self.analyzer.signature}
        await self._call("upsert", points=[models.PointStruct(id=pt.META_ID, vector={}, payload=payload)], wait=True)

    async def _ensure_indexes(self) -> None:
        """Payload indexes a server uses to filter (embedded mode scans and has none). Idempotent."""
        if self.settings.embedded:
            return
        keyword = models.PayloadSchemaType.KEYWORD
        fields: list[tuple[str, Any]] = [
            ("workspace", models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)),
            ("dataset", keyword), ("file_id", keyword), ("kind", keyword),
            ("generation", models.PayloadSchemaType.INTEGER),
        ]
        for name, schema in fields:
            await self._call("create_payload_index", field_name=name, field_schema=schema, wait=True)

    def _lock(self) -> asyncio.Lock:
        if self._layout_lock is None:
            raise RuntimeError("vector store is not started")
        return self._layout_lock

    async def _layout_for_read(self, want_dense: bool) -> Layout | None:
        """The layout: re-read while the collection is missing (another process may create it), and
        every ``REFRESH_SECONDS`` while a dense search meets a collection without dense vectors."""
        layout = self._layout
        stale = layout is None or (want_dense and self.settings.dense and layout.dense_dim is None
                                   and time.monotonic() - self._checked_at > REFRESH_SECONDS)
        if stale:
            async with self._lock():
                if self._layout is layout:  # nobody refreshed it while we waited
                    return await self._refresh()
        return self._layout

    async def _layout_for_write(self, dim: int | None) -> Layout:
        """The layout, creating the collection (or its dense vector of size ``dim``) as needed."""
        async with self._lock():
            layout = self._layout or await self._refresh()
            if layout is None:
                await self._create(dim or self.settings.dimension)
                layout = await self._refresh()
                assert layout is not None
            if dim is not None and layout.dense_dim is None:
                layout = await self._refresh() or layout
            if dim is not None and layout.dense_dim is None:
                await self._add_dense(dim)
                layout = await self._refresh() or layout
            return layout

    async def _create(self, dim: int | None) -> None:
        s = self.settings
        vectors = {DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)} if dim and s.dense else {}
        try:
            await self._call(
                "create_collection", vectors_config=vectors,
                sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                shard_number=s.shard_number, replication_factor=s.replication_factor,
            )
        except Exception:
            if not await self._call("collection_exists"):  # not a race with another process: a real error
                raise
            return
        await self._write_meta()
        await self._ensure_indexes()
        log.info("created Qdrant collection %s (dense size %s)", self.collection, dim or "none")

    async def _add_dense(self, dim: int) -> None:
        """Add the dense vector to a collection made without it (qdrant-client/server 1.19+)."""
        if self._client is None or not hasattr(self._client, "create_vector_name"):
            raise RuntimeError(self._no_dense(dim))
        try:
            dense = models.DenseVectorConfig(size=dim, distance=models.Distance.COSINE)
            config = models.DenseVectorNameConfig(dense=dense)
            await self._call("create_vector_name", vector_name=DENSE, vector_name_config=config, wait=True)
        except Exception as exc:
            raise RuntimeError(self._no_dense(dim)) from exc

    def _no_dense(self, dim: int) -> str:
        return (f"Qdrant collection {self.collection!r} has no dense vectors and this Qdrant cannot add them; set "
                f"vector_store.dimension = {dim} and use a new collection (or drop this one and re-ingest)")

    # -- file records -------------------------------------------------------------------------

    async def _record(self, workspace: str, dataset: str, file_id: str) -> pt.FileRecord | None:
        found = await self._call("retrieve", ids=[pt.record_id(workspace, dataset, file_id)], with_payload=True,
                                 consistency=self._consistency)
        return pt.FileRecord.from_payload(found[0].payload) if found else None

    @property
    def _consistency(self) -> models.ReadConsistency | None:
        value = self.settings.read_consistency
        return models.ReadConsistencyType(value) if isinstance(value, str) else value

    async def _flip(self, workspace: str, dataset: str, file_id: str, record: pt.FileRecord,
                    on_rejected: Callable[[], Awaitable[None]] | None = None) -> None:
        """Make ``record`` the file's current one unless a newer generation already is (one
        conditional upsert: atomic).

        If the request fails, the record is read back: a move that happened counts as done; one
        that certainly did not runs ``on_rejected`` and raises the error. When even that is unknown
        (or on cancellation) the error is raised as is: the new write stays, whole, current or not.
        """
        point = models.PointStruct(id=pt.record_id(workspace, dataset, file_id), vector={},
                                   payload=pt.record_payload(workspace, dataset, file_id, record))
        try:
            await self._call("upsert", points=[point], wait=True, ordering=models.WriteOrdering.STRONG,
                             update_filter=models.Filter(must=[_older_than(record.generation)]))
        except Exception:
            try:
                now = await self._record(workspace, dataset, file_id)
            except Exception:
                log.warning("could not tell whether write %s of %s/%s became current", record.write, dataset, file_id)
                raise
            if now is None or now.write != record.write:
                if on_rejected is not None:
                    await on_rejected()
                raise

    async def _collect(self, workspace: str, dataset: str, file_id: str, record: pt.FileRecord | None = None) -> None:
        """Delete the chunks the file's record outdates (records only move forward, so they can never
        be visible again). Best effort."""
        try:
            if record is None:
                record = await self._record(workspace, dataset, file_id)
                if record is None:
                    return
            await self._call("delete", points_selector=models.FilterSelector(
                filter=_file_chunks(workspace, dataset, file_id, _outdated_by(record))), wait=True)
        except Exception:
            log.warning("could not remove old chunks of %s/%s (they stay invisible)", dataset, file_id, exc_info=True)

    async def _discard(self, workspace: str, dataset: str, file_id: str, write: str) -> None:
        """Delete one write's chunks after it failed. Best effort."""
        try:
            await self._call("delete", points_selector=models.FilterSelector(filter=_file_chunks(
                workspace, dataset, file_id, _match("write", write))), wait=True)
        except Exception:
            log.warning("could not remove the partial write of %s/%s (it stays invisible)", dataset, file_id,
                        exc_info=True)

    # -- writes -------------------------------------------------------------------------------

    def _points(self, chunks: Sequence[Chunk], record: pt.FileRecord, dim: int | None) -> list[models.PointStruct]:
        out: list[models.PointStruct] = []
        for chunk in chunks:
            indices, values = self.analyzer.document(chunk.text, chunk.title, chunk.headings)
            vector: dict[str, Any] = {LEXICAL: models.SparseVector(indices=indices, values=values)}
            dense = usable_vector(chunk.vector) if dim is not None else None
            if dense is not None:
                vector[DENSE] = dense
            out.append(models.PointStruct(
                id=pt.chunk_id(chunk.workspace, chunk.dataset, chunk.file_id, record.write, chunk.index),
                vector=vector, payload=pt.chunk_payload(chunk, record.generation, record.write)))
        return out

    def _dimension(self, chunks: Sequence[Chunk]) -> int | None:
        if not self.settings.dense:
            return None
        sizes = {len(v) for c in chunks if (v := usable_vector(c.vector)) is not None}
        if len(sizes) > 1:
            raise ValueError(f"chunks carry vectors of different sizes {sorted(sizes)}")
        return sizes.pop() if sizes else None

    async def replace_file(self, workspace: str, dataset: str, file_id: str, chunks: list[Chunk]) -> None:
        seen: set[int] = set()
        for chunk in chunks:
            if (chunk.workspace, chunk.dataset, chunk.file_id) != (workspace, dataset, file_id):
                raise ValueError(f"chunk {chunk.id!r} does not belong to {workspace}/{dataset}/{file_id}")
            if chunk.index in seen:
                raise ValueError(f"chunk index {chunk.index} of {dataset}/{file_id} appears twice")
            seen.add(chunk.index)
        dim = self._dimension(chunks)
        if not chunks and await self._layout_for_read(False) is None:
            return  # no collection yet, so no chunks to remove (and no reason to create one without its vectors)
        layout = await self._layout_for_write(dim)
        if dim is not None and layout.dense_dim != dim:
            raise ValueError(f"chunk vectors have {dim} dimensions; collection {self.collection!r} holds "
                             f"{layout.dense_dim} (a new embedding model needs a new collection)")
        current = await self._record(workspace, dataset, file_id)
        record = pt.FileRecord(self._generations.next(current.generation if current else 0), pt.new_write(),
                               len(chunks), False)
        discard = partial(self._discard, workspace, dataset, file_id, record.write)
        try:
            size = self.settings.batch_size
            for start in range(0, len(chunks), size):
                batch = await asyncio.to_thread(self._points, chunks[start:start + size], record, dim)
                await self._call("upsert", points=batch, wait=True)
        except BaseException:
            await discard()
            raise
        await self._flip(workspace, dataset, file_id, record, on_rejected=discard)
        await self._collect(workspace, dataset, file_id)

    async def delete_file(self, workspace: str, dataset: str, file_id: str) -> int:
        if await self._layout_for_read(False) is None:
            return 0
        current = await self._record(workspace, dataset, file_id)
        if current is None:
            leftovers = await self._call("count", count_filter=_file_chunks(workspace, dataset, file_id), exact=True)
            if not leftovers.count:
                return 0
        elif current.deleted:
            await self._collect(workspace, dataset, file_id, current)
            return 0
        # A tombstone, newer than every write begun before it, then the chunks it outdates.
        tombstone = pt.FileRecord(self._generations.next(current.generation if current else 0), pt.new_write(), 0, True)
        await self._flip(workspace, dataset, file_id, tombstone)
        await self._collect(workspace, dataset, file_id)
        return current.count if current is not None else 0

    async def delete_dataset(self, workspace: str, dataset: str) -> int:
        if await self._layout_for_read(False) is None:
            return 0
        removed = sum(r.count for r in await self._records(workspace, dataset))
        await self._call("delete", points_selector=models.FilterSelector(filter=models.Filter(must=[
            _match("workspace", workspace), _match("dataset", dataset)])), wait=True)
        return removed

    async def _records(self, workspace: str, dataset: str) -> list[pt.FileRecord]:
        """The live file records of a dataset."""
        scope = models.Filter(
            must=[_match("kind", pt.FILE), _match("workspace", workspace), _match("dataset", dataset)],
            must_not=[_match("deleted", True)])
        out: list[pt.FileRecord] = []
        offset: Any = None
        while True:
            page, offset = await self._call("scroll", scroll_filter=scope, limit=SCROLL_PAGE, offset=offset,
                                            with_payload=True, consistency=self._consistency)
            out.extend(r for p in page if (r := pt.FileRecord.from_payload(p.payload)) is not None)
            if offset is None:
                return out

    async def count(self, workspace: str, dataset: str, file_id: str | None = None) -> int:
        if await self._layout_for_read(False) is None:
            return 0
        if file_id is None:
            return sum(r.count for r in await self._records(workspace, dataset))
        record = await self._record(workspace, dataset, file_id)
        return record.count if record is not None and not record.deleted else 0

    # -- search -------------------------------------------------------------------------------

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
        condition = compile_filter(filters) if filters else True
        datasets = list(dict.fromkeys(datasets))
        if k <= 0 or not datasets or condition is False:
            return []
        if self._pool is None:
            raise RuntimeError("vector store is not started")
        indices, values = self.analyzer.query(query)
        layout = await self._layout_for_read(want_dense=bool(vector) and self.settings.dense)
        if layout is None:
            return []
        dense = usable_vector(vector) if self.settings.dense and layout.dense_dim else None
        if dense is not None and len(dense) != layout.dense_dim:
            dense = None
        if not indices and dense is None:
            return []
        must: list[models.Condition] = [_match("kind", pt.CHUNK), _match("workspace", workspace),
                                        models.FieldCondition(key="dataset", match=models.MatchAny(any=datasets))]
        if condition is not True:
            must.append(condition)
        scope = models.Filter(must=must)
        sparse = models.SparseVector(indices=indices, values=values) if indices else None
        hits: list[SearchHit] = []
        limit = 2 * k + 8
        for _ in range(MAX_ATTEMPTS):
            found = await self._query(workspace, scope, sparse, dense, limit)
            hits, outdated = await self._visible(workspace, found)
            if outdated:
                # A file moved to a newer write while we searched: drop its old chunks, look again.
                await asyncio.gather(*(self._collect(workspace, d, f, r) for (d, f), r in outdated.items()))
            elif len(hits) < k and len(found) >= limit and len(hits) < len(found):
                limit *= 4  # invisible chunks (a write in progress) took the places: look deeper
            else:
                break
        return hits[:k]

    def _idf_params(self, workspace: str) -> models.SearchParams | None:
        if self.settings.idf != "workspace":
            return None
        corpus = models.Filter(must=[_match("kind", pt.CHUNK), _match("workspace", workspace)])
        return models.SearchParams(idf=models.IdfCorpusParams(corpus=corpus))

    async def _query(self, workspace: str, scope: models.Filter, sparse: models.SparseVector | None,
                     dense: list[float] | None, limit: int) -> list[models.ScoredPoint]:
        common: dict[str, Any] = {"query_filter": scope, "limit": limit, "with_payload": True,
                                  "consistency": self._consistency}
        if sparse is not None and dense is not None:
            depth = max(limit, self.settings.candidates)
            response = await self._call(
                "query_points",
                prefetch=[
                    models.Prefetch(query=sparse, using=LEXICAL, filter=scope, limit=depth,
                                    params=self._idf_params(workspace)),
                    models.Prefetch(query=dense, using=DENSE, filter=scope, limit=depth),
                ],
                # Qdrant ranks from 0: k + 1 gives sqlite's 1 / (rrf_k + rank) with rank from 1.
                query=models.RrfQuery(rrf=models.Rrf(k=self.settings.rrf_k + 1)), **common)
        elif sparse is not None:
            response = await self._call("query_points", query=sparse, using=LEXICAL,
                                        search_params=self._idf_params(workspace), **common)
        else:
            response = await self._call("query_points", query=dense, using=DENSE, **common)
        return list(response.points)

    async def _visible(self, workspace: str, found: list[models.ScoredPoint]
                       ) -> tuple[list[SearchHit], dict[tuple[str, str], pt.FileRecord]]:
        """The hits of current writes, and the files some hits of which are outdated (with their
        current record)."""
        files = {(p.payload["dataset"], p.payload["file_id"]) for p in found if p.payload}
        if not files:
            return [], {}
        ids = {pt.record_id(workspace, d, f): (d, f) for d, f in files}
        records: dict[tuple[str, str], pt.FileRecord] = {}
        for point in await self._call("retrieve", ids=list(ids), with_payload=True, consistency=self._consistency):
            record = pt.FileRecord.from_payload(point.payload)
            if record is not None:
                records[ids[str(point.id)]] = record
        hits: list[SearchHit] = []
        outdated: dict[tuple[str, str], pt.FileRecord] = {}
        for point in found:
            payload = point.payload
            if not payload or payload.get("workspace") != workspace:
                continue
            key = (payload["dataset"], payload["file_id"])
            record = records.get(key)
            if record is None:
                continue  # a first write not yet visible, or a file being deleted with its dataset
            if record.shows(payload):
                hits.append(SearchHit(chunk=pt.chunk_from_payload(payload), score=float(point.score)))
            elif int(payload["generation"]) <= record.generation:
                outdated[key] = record
        return hits, outdated
