"""The ``pgvector`` vector store driver: PostgreSQL full-text search (BM25) + pgvector (HNSW), fused by RRF.

Contracts (see ``README.md`` for the reasoning):

* Tenancy: every statement filters by ``workspace`` in SQL; the lexical statistics (document
  frequencies, chunk count, average length) are kept per workspace, so another tenant's chunks
  never move a tenant's scores.
* :meth:`PgvectorStore.replace_file` is one transaction: it takes the workspace's transaction-level
  advisory lock (writers of one workspace take turns, so concurrent writes of a file converge and
  the statistics stay exact), deletes the file's rows, inserts the new ones and adjusts the
  statistics. An error rolls it all back; a crash leaves the last commit.
* Searches run in one read-only ``REPEATABLE READ`` transaction (statistics, both rankings and the
  hydration of hits see one snapshot), so a search never mixes two versions of a file.
* Scores: lexical only, BM25; dense only, cosine similarity; both, ``Σ 1/(rrf_k + rank)``.
* Connection failures are a 503 ``vector_store_unavailable``; the pool reconnects by itself.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import asyncpg

from chorus.errors import ChorusError
from chorus.vectorstores import Chunk, SearchHit, VectorStoreDriver, VectorStoreSettings
from chorus_vectorstore_pgvector.filters import Params, clean, clean_json, compile_filter
from chorus_vectorstore_pgvector.lexical import MAX_QUERY_TERMS, fold, fold_query, plan_query
from chorus_vectorstore_pgvector.schema import (
    create_index,
    index_type,
    indexed_dimensions,
    lock_key,
    migrate,
    quote_ident,
)
from chorus_vectorstore_pgvector.settings import PgvectorStoreSettings

log = logging.getLogger("chorus.vectorstore.pgvector")

MAX_DIMS = 16_000          # pgvector's largest vector
FLOAT32_MAX = 3.4028234663852886e38
APPLICATION_NAME = "chorus-pgvector"  # how the pool's connections show in pg_stat_activity
MAX_K = 1_000_000          # a larger k asks for more than any ranking returns (and must fit a bigint)
EXACT_BEYOND = 1000        # dense rankings deeper than this skip the HNSW index (hnsw.ef_search's maximum)

#: What asyncpg raises when the server cannot be used right now (as opposed to a bad query).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

_INSERT = """
INSERT INTO chunks (workspace, dataset, file_id, idx, chunk_id, text, title, headings, url, source, start_offset,
                    end_offset, attributes, attributes_json, tsv, terms, length, dims, embedding)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::jsonb, $13::text,
       setweight(p.ti, 'A') || setweight(p.he, 'B') || p.tx, t.terms, t.length, $17, $18
FROM (SELECT to_tsvector($19::text::regconfig, $14) AS ti, to_tsvector($19::text::regconfig, $15) AS he,
             to_tsvector($19::text::regconfig, $16) AS tx) AS p
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(g.lexeme, g.tf), '{}'::jsonb) AS terms, coalesce(sum(g.tf), 0)::real AS length
    FROM (SELECT u.lexeme, sum(u.n) AS tf
          FROM (SELECT lexeme, cardinality(positions) * $20::float8 AS n FROM unnest(p.ti)
                UNION ALL SELECT lexeme, cardinality(positions) * $21::float8 FROM unnest(p.he)
                UNION ALL SELECT lexeme, cardinality(positions)::float8 FROM unnest(p.tx)) AS u
          GROUP BY u.lexeme) AS g
) AS t
"""

_ADD_STATS = """
WITH new AS (SELECT terms, length FROM chunks WHERE workspace = $1 AND dataset = $2 AND file_id = $3),
t AS (SELECT k AS term, count(*)::int AS n FROM new, jsonb_object_keys(new.terms) AS k GROUP BY k),
ins AS (
    INSERT INTO term_stats AS s (workspace, term, df) SELECT $1, term, n FROM t ORDER BY term
    ON CONFLICT (workspace, term) DO UPDATE SET df = s.df + excluded.df
)
INSERT INTO workspace_stats AS w (workspace, chunks, length)
SELECT $1, count(*), coalesce(sum(length), 0) FROM new
ON CONFLICT (workspace) DO UPDATE SET chunks = w.chunks + excluded.chunks, length = w.length + excluded.length
"""

_DELETE = """
WITH del AS (DELETE FROM chunks WHERE workspace = $1 AND dataset = $2 {file} RETURNING terms, length),
t AS (SELECT k AS term, count(*)::int AS n FROM del, jsonb_object_keys(del.terms) AS k GROUP BY k),
upd AS (UPDATE term_stats AS s SET df = s.df - t.n FROM t WHERE s.workspace = $1 AND s.term = t.term),
ws AS (
    UPDATE workspace_stats AS w SET chunks = w.chunks - d.n, length = w.length - d.len
    FROM (SELECT count(*) AS n, coalesce(sum(length), 0) AS len FROM del) AS d
    WHERE w.workspace = $1 AND d.n > 0
)
SELECT count(*) FROM del
"""
_DELETE_FILE = _DELETE.format(file="AND file_id = $3")
_DELETE_DATASET = _DELETE.format(file="")

_TERMS = """
SELECT x.lexeme, coalesce(s.df, 0) AS df,
       (SELECT chunks FROM workspace_stats WHERE workspace = $1) AS total,
       (SELECT length FROM workspace_stats WHERE workspace = $1) AS length
FROM (SELECT u.lexeme, u.positions[1] AS pos FROM unnest(to_tsvector($2::text::regconfig, $3)) AS u
      ORDER BY pos, u.lexeme LIMIT $4) AS x
LEFT JOIN term_stats AS s ON s.workspace = $1 AND s.term = x.lexeme
"""

_BM25 = """
WITH q(term, idf) AS (SELECT * FROM unnest($2::text[], $3::float8[])),
cand AS (
    SELECT c.id, c.terms, c.length FROM chunks AS c
    WHERE c.workspace = $1 AND c.dataset = ANY($4::text[]) AND c.tsv @@ $5::tsquery AND {where} {limit}
)
SELECT cand.id,
       sum(q.idf * x.tf * ($6::float8 + 1)
           / (x.tf + $6::float8 * (1 - $7::float8 + $7::float8 * cand.length / $8::float8))) AS score
FROM cand CROSS JOIN q CROSS JOIN LATERAL (SELECT (cand.terms ->> q.term)::float8 AS tf OFFSET 0) AS x
WHERE x.tf IS NOT NULL
GROUP BY cand.id ORDER BY score DESC, cand.id LIMIT $9
"""

_HYDRATE = """
SELECT id, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start_offset, end_offset, attributes_json
FROM chunks WHERE workspace = $1 AND id = ANY($2::bigint[])
"""


def usable_vector(vector: Sequence[float] | None) -> list[float] | None:
    """``vector`` as floats when pgvector can rank it by cosine (finite float32, not all zero), else ``None``."""
    if not vector or len(vector) > MAX_DIMS:
        return None
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in values):
        return None
    norm = math.fsum(x * x for x in values)
    return values if math.isfinite(norm) and norm > 0 else None


def _encode_vector(values: Sequence[float]) -> bytes:
    """pgvector's binary wire format: int16 dimensions, int16 unused, float32 big-endian values."""
    return struct.pack(f">HH{len(values)}f", len(values), 0, *values)


def _decode_vector(data: bytes) -> list[float]:
    (dims,) = struct.unpack_from(">H", data)
    return list(struct.unpack_from(f">{dims}f", data, 4))


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, userinfo = head.rpartition("//")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}//{user}@{tail}" if user else f"{scheme}//{tail}"


def unavailable(message: str = "The vector store is unavailable; retry shortly.") -> ChorusError:
    return ChorusError(message, status_code=503, code="vector_store_unavailable")


def fuse(*rankings: list[tuple[int, float]], rrf_k: int = 60, k: int = 8) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score = Σ 1/(rrf_k + rank)`` over rankings (rank from 1), ties by row id,
    exactly as the built-in ``sqlite`` store fuses."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (rowid, _) in enumerate(ranking, start=1):
            fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]


class PgvectorStore(VectorStoreDriver):
    """Chunks in one PostgreSQL schema; lexical (BM25 over full-text search), dense (pgvector) and hybrid (RRF)."""

    settings_type: ClassVar[type[VectorStoreSettings]] = PgvectorStoreSettings
    settings: PgvectorStoreSettings

    def __init__(self, settings: VectorStoreSettings, data_dir: Path) -> None:
        super().__init__(settings, data_dir)
        assert isinstance(settings, PgvectorStoreSettings)
        self.schema = settings.schema
        self.where = f"{redact(settings.url.get())} (schema {settings.schema})"
        self._pool: asyncpg.Pool | None = None
        self._vector_schema: str | None = None
        self._iterative_scan = False
        self._dims: set[int] = set()
        self._weights = (float(settings.title_weight), float(settings.headings_weight))

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the schema (under an advisory lock) and open the pool."""
        if self._pool is not None:
            return
        s = self.settings
        try:
            conn = await asyncpg.connect(s.url.get(), timeout=s.connect_timeout)
        except UNAVAILABLE as exc:
            raise unavailable(f"PostgreSQL at {self.where} is unreachable: {type(exc).__name__}: {exc}") from None
        try:
            self._vector_schema = await migrate(conn, self.schema, s.text_search_config)
            self._dims = await indexed_dimensions(conn, self.schema)
            version = str(await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            self._iterative_scan = tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (0, 8)
        finally:
            await conn.close()
        search_path = f"{quote_ident(self.schema)}, {quote_ident(self._vector_schema)}"
        try:
            self._pool = await asyncpg.create_pool(
                s.url.get(), min_size=s.pool_min_size, max_size=s.pool_max_size, timeout=s.connect_timeout,
                command_timeout=s.command_timeout,
                server_settings={"search_path": search_path, "application_name": APPLICATION_NAME},
                init=self._init_connection)
        except UNAVAILABLE as exc:
            raise unavailable(f"PostgreSQL at {self.where} is unreachable: {type(exc).__name__}: {exc}") from None

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("vector", schema=self._vector_schema, encoder=_encode_vector,
                                  decoder=_decode_vector, format="binary")

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; server problems become a 503 ``vector_store_unavailable``."""
        if self._pool is None:
            raise RuntimeError("the pgvector vector store is not started")
        try:
            async with self._pool.acquire(timeout=self.settings.connect_timeout) as conn:
                yield conn
        except UNAVAILABLE as exc:
            log.warning("vector store %s unavailable: %s: %s", self.where, type(exc).__name__, exc)
            if self._pool is not None:  # the server may have restarted: replace every pooled connection,
                await self._pool.expire_connections()  # so one request fails, not one per connection
            raise unavailable() from None

    async def _ensure_index(self, dims: int) -> None:
        if dims in self._dims:
            return
        async with self._connection() as conn:
            await create_index(conn, self.schema, dims, self.settings.hnsw_m, self.settings.hnsw_ef_construction)
        self._dims.add(dims)

    # -- writes -------------------------------------------------------------------------------

    def _rows(self, workspace: str, dataset: str, file_id: str, chunks: Sequence[Chunk]) -> list[tuple[Any, ...]]:
        """The insert parameters of ``chunks``; ``ValueError`` for a chunk set that cannot be stored."""
        seen: set[int] = set()
        rows: list[tuple[Any, ...]] = []
        config = self.settings.text_search_config
        title_weight, headings_weight = self._weights
        for c in chunks:
            if (c.workspace, c.dataset, c.file_id) != (workspace, dataset, file_id):
                raise ValueError(f"chunk {c.id!r} does not belong to {workspace}/{dataset}/{file_id}")
            if c.index in seen:
                raise ValueError(f"chunk index {c.index} of {workspace}/{dataset}/{file_id} is repeated")
            seen.add(c.index)
            try:
                attributes = json.dumps(clean_json(c.attributes), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"chunk {c.id!r}: attributes are not storable JSON ({exc})") from None
            vector = usable_vector(c.vector) if self.settings.dense else None
            headings = [clean(h) for h in c.headings]
            rows.append((
                clean(workspace), clean(dataset), clean(file_id), c.index, clean(c.id), clean(c.text), clean(c.title),
                headings, clean(c.url), clean(c.source), c.start, c.end, attributes,
                fold(c.title), fold(" \n ".join(headings)), fold(c.text),
                len(vector) if vector else None, vector, config, title_weight, headings_weight,
            ))
        return rows

    async def _delete(self, conn: asyncpg.Connection, workspace: str, dataset: str, file_id: str | None) -> int:
        if file_id is None:
            removed = await conn.fetchval(_DELETE_DATASET, workspace, dataset)
        else:
            removed = await conn.fetchval(_DELETE_FILE, workspace, dataset, file_id)
        return int(removed)

    async def _lock_workspace(self, conn: asyncpg.Connection, workspace: str) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(self.schema, "workspace:" + workspace))

    async def replace_file(self, workspace: str, dataset: str, file_id: str, chunks: list[Chunk]) -> None:
        if self._pool is None:
            raise RuntimeError("the pgvector vector store is not started")
        rows = self._rows(workspace, dataset, file_id, chunks)
        for dims in sorted({row[16] for row in rows if row[16]}):
            await self._ensure_index(dims)
        workspace, dataset, file_id = clean(workspace), clean(dataset), clean(file_id)
        async with self._connection() as conn, conn.transaction():
            await self._lock_workspace(conn, workspace)
            await self._delete(conn, workspace, dataset, file_id)
            if rows:
                await conn.executemany(_INSERT, rows)
                await conn.execute(_ADD_STATS, workspace, dataset, file_id)

    async def delete_file(self, workspace: str, dataset: str, file_id: str) -> int:
        workspace, dataset, file_id = clean(workspace), clean(dataset), clean(file_id)
        async with self._connection() as conn, conn.transaction():
            await self._lock_workspace(conn, workspace)
            return await self._delete(conn, workspace, dataset, file_id)

    async def delete_dataset(self, workspace: str, dataset: str) -> int:
        workspace, dataset = clean(workspace), clean(dataset)
        async with self._connection() as conn, conn.transaction():
            await self._lock_workspace(conn, workspace)
            removed = await self._delete(conn, workspace, dataset, None)
            if removed:  # tidy the statistics of terms no chunk of the workspace holds any more
                await conn.execute("DELETE FROM term_stats WHERE workspace = $1 AND df <= 0", workspace)
                await conn.execute("DELETE FROM workspace_stats WHERE workspace = $1 AND chunks <= 0", workspace)
            return removed

    async def count(self, workspace: str, dataset: str, file_id: str | None = None) -> int:
        async with self._connection() as conn:
            if file_id is None:
                found = await conn.fetchval("SELECT count(*) FROM chunks WHERE workspace = $1 AND dataset = $2",
                                            clean(workspace), clean(dataset))
            else:
                found = await conn.fetchval(
                    "SELECT count(*) FROM chunks WHERE workspace = $1 AND dataset = $2 AND file_id = $3",
                    clean(workspace), clean(dataset), clean(file_id))
            return int(found)

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
        if self._pool is None:
            raise RuntimeError("the pgvector vector store is not started")
        if filters:
            compile_filter(filters, Params())  # a malformed filter is a 400 before any query runs
        names = [clean(d) for d in dict.fromkeys(datasets)]
        text = fold_query(query)
        unit = usable_vector(vector) if vector and self.settings.dense else None
        if k <= 0 or not names or not (text.strip() or unit is not None):
            return []
        k = min(k, MAX_K)
        workspace = clean(workspace)
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            both = bool(text.strip()) and unit is not None
            depth = max(k, self.settings.candidates) if both else k
            lexical = await self._lexical(conn, workspace, names, text, depth, filters) if text.strip() else []
            dense = await self._dense(conn, workspace, names, unit, depth, filters) if unit is not None else []
            if lexical and dense:
                ranked = fuse(lexical, dense, rrf_k=self.settings.rrf_k, k=k)
            else:
                ranked = (lexical or dense)[:k]
            return await self._hydrate(conn, workspace, ranked)

    async def _lexical(self, conn: asyncpg.Connection, workspace: str, datasets: list[str], text: str, limit: int,
                       filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        s = self.settings
        rows = await conn.fetch(_TERMS, workspace, s.text_search_config, text, MAX_QUERY_TERMS)
        if not rows or not rows[0]["total"]:
            return []
        total, length = int(rows[0]["total"]), float(rows[0]["length"])
        df = {r["lexeme"]: int(r["df"]) for r in rows}
        plan = plan_query(list(df), df, total, s.match_budget)
        if plan is None:
            return []
        terms = [t for t, n in df.items() if n > 0]
        idf = [math.log(1 + (total - df[t] + 0.5) / (df[t] + 0.5)) for t in terms]
        params = Params(workspace, terms, idf, datasets, plan.gate, s.bm25_k1, s.bm25_b,
                        max(length / total, 1e-9), limit)
        where = compile_filter(filters, params) if filters else "TRUE"
        bound = f"LIMIT {int(s.match_budget)}" if plan.bounded else ""
        found = await conn.fetch(_BM25.format(where=where, limit=bound), *params.values)
        return [(int(r[0]), float(r[1])) for r in found]

    async def _dense(self, conn: asyncpg.Connection, workspace: str, datasets: list[str], unit: list[float],
                     limit: int, filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        dims = len(unit)
        kind = index_type(dims)
        params = Params(workspace, datasets, unit, limit)
        where = compile_filter(filters, params) if filters else "TRUE"
        order = f"c.embedding::{kind}({dims}) <=> $3::{kind}({dims})" if kind else "c.embedding <=> $3"
        # dims is an int (the query vector's length); it must appear literally for the partial index to apply
        sql = (f"SELECT c.id, 1 - (c.embedding <=> $3) AS score FROM chunks AS c WHERE c.dims = {int(dims)}"
               f" AND c.workspace = $1 AND c.dataset = ANY($2::text[]) AND {where} ORDER BY {order}, c.id LIMIT $4")
        exact = kind is None or limit > EXACT_BEYOND
        if not exact:
            await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)",
                               str(max(self.settings.hnsw_ef_search, min(limit, EXACT_BEYOND))))
            if self._iterative_scan:
                await conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            found = await conn.fetch(sql, *params.values)
            if len(found) >= limit:
                return [(int(r[0]), float(r[1])) for r in found]
        # fewer than asked: the scope is small, or a selective filter outran the index scan; rank exactly
        await conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        try:
            found = await conn.fetch(sql, *params.values)
        finally:
            await conn.execute("SELECT set_config('enable_indexscan', 'on', true)")
        return [(int(r[0]), float(r[1])) for r in found]

    async def _hydrate(self, conn: asyncpg.Connection, workspace: str,
                       ranked: list[tuple[int, float]]) -> list[SearchHit]:
        if not ranked:
            return []
        rows = {r[0]: r for r in await conn.fetch(_HYDRATE, workspace, [rowid for rowid, _ in ranked])}
        hits: list[SearchHit] = []
        for rowid, score in ranked:
            row = rows.get(rowid)
            if row is None:
                continue
            _, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start, end, attributes = row
            hits.append(SearchHit(score=score, chunk=Chunk(
                id=chunk_id, workspace=workspace, dataset=dataset, file_id=file_id, index=idx, text=text, title=title,
                headings=list(headings), url=url, source=source, start=start, end=end, attributes=json.loads(attributes),
            )))
        return hits
