"""Built-in vector store ``sqlite``: one SQLite file, FTS5/BM25 lexical search, dense vectors, RRF.

Storage (``<data_dir>/knowledge.sqlite3`` unless ``path`` is set), in WAL mode:

* ``chunks``: one row per chunk, keyed by ``(workspace, dataset, file_id, idx)``; ids only grow;
* ``chunks_fts``: an external-content FTS5 index over ``text``, ``title`` and ``headings``,
  kept in step by triggers; ranked with ``bm25()`` using per-column weights;
* ``chunk_vectors``: each chunk's embedding as little-endian float32, when it has one;
* ``datasets`` and ``deletions``: a version per ``(workspace, dataset)``, bumped by every write,
  and the id ranges each version deleted. The in-memory dense index (unit-norm numpy matrices per
  dataset and dimension) uses them to refresh incrementally, also after other processes' writes.

Contracts:

* Every statement filters by workspace in SQL; the dense index is keyed by workspace too.
* :meth:`SqliteVectorStore.replace_file` runs ``BEGIN IMMEDIATE``, deletes the file's rows,
  inserts the new ones and commits; any error rolls back, and a crash leaves the last commit.
* Query text is never FTS5 syntax: it is cut into word tokens, each quoted, and OR-ed, so BM25
  favours chunks that match more (and rarer) terms. When the terms' document frequencies exceed
  ``match_budget``, scoring is restricted to chunks containing the rarest terms (still exact BM25
  over all informative terms for those chunks); see :func:`plan_query`.
* Scores: lexical only, ``-bm25`` (higher is better); dense only, cosine similarity; both, the
  reciprocal rank fusion ``sum(1 / (rrf_k + rank))``. Hits carry no vector.
* Filters use the OpenAI vector store filter shape over ``attributes``, compiled to parameterised
  ``json_extract`` SQL (:func:`compile_filter`); a malformed filter is an ``InvalidRequest``.
* SQLite and numpy work runs in worker threads: one writer connection on a one-thread executor,
  and a pool of reader connections, one per reader thread; the event loop never blocks on them.

Dense search is exact (brute force) with numpy; sqlite-vec cannot be loaded by interpreters whose
``sqlite3`` lacks ``enable_load_extension`` and was slower here (see ``docs/benchmarks-retrieval.md``).
Without numpy installed, vectors are stored but searches are lexical only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import re
import sqlite3
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from chorus.errors import InvalidRequest
from chorus.knowledge.model import Chunk, SearchHit
from chorus.vectorstores import VectorStoreDriver, VectorStoreSettings

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional; dense search needs it
    np = None  # type: ignore[assignment]

log = logging.getLogger("chorus.vectorstore.sqlite")

T = TypeVar("T")

SCHEMA_VERSION = 1
MAX_QUERY_TERMS = 64
MAX_FILTER_NODES = 64
MAX_FILTER_DEPTH = 8
MAX_IN_VALUES = 500
_TOKENIZER = re.compile(r"^[A-Za-z0-9_ ]+$")
_TERM = re.compile(r"[^\W_]+")
_BAD_KEY = re.compile(r'["\\\x00-\x1f]')

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    file_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    chunk_id TEXT NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    headings TEXT NOT NULL,
    url TEXT NOT NULL,
    source TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    attributes TEXT NOT NULL,
    UNIQUE (workspace, dataset, file_id, idx)
);
CREATE TABLE IF NOT EXISTS chunk_vectors (
    id INTEGER PRIMARY KEY,
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_vectors_scope ON chunk_vectors (workspace, dataset);
CREATE TABLE IF NOT EXISTS datasets (
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    logged_after INTEGER NOT NULL,
    PRIMARY KEY (workspace, dataset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deletions (
    workspace TEXT NOT NULL,
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (workspace, dataset, version, lo)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, headings, content='chunks', content_rowid='id', tokenize='{tokenizer}'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, title, headings) VALUES (new.id, new.text, new.title, new.headings);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, title, headings)
        VALUES ('delete', old.id, old.text, old.title, old.headings);
    DELETE FROM chunk_vectors WHERE id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS chunks_au BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: replace the file');
END;
"""

_INSERT = (
    'INSERT INTO chunks (workspace, dataset, file_id, idx, chunk_id, text, title, headings, url, source, start, "end",'
    " attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_HYDRATE = (
    'SELECT id, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start, "end", attributes'
    " FROM chunks WHERE +workspace = ? AND id IN ({marks})"
)


class SqliteVectorStoreSettings(VectorStoreSettings):  # type: ignore[misc]  # mypy misreads inherited frozen=True
    """``[vector_store]`` keys of the ``sqlite`` driver."""

    path: str | None = None                 # default <data_dir>/knowledge.sqlite3; relative to data_dir
    dense: bool = True                      # store vectors and use them for hybrid search
    rrf_k: int = 60                         # reciprocal rank fusion constant
    candidates: int = 50                    # depth of each ranking fused by RRF
    match_budget: int = 3000                # ~max chunks BM25 scores per query; 0 = always exact
    title_weight: float = 2.0               # BM25 column weights (text is 1.0)
    headings_weight: float = 1.5
    readers: int = 4                        # reader connections (and threads)
    busy_timeout: float = 30.0              # seconds a writer waits for another process's lock
    dense_cache_mb: int = 1024              # memory for dense matrices, least recently used evicted
    tokenizer: str = "porter unicode61 remove_diacritics 2"  # FTS5 tokenizer, used when the file is created


# -- query text -----------------------------------------------------------------------------------


def query_terms(text: str) -> list[str]:
    """Lower-cased, de-duplicated word tokens of ``text`` (at most ``MAX_QUERY_TERMS``), in order."""
    seen: dict[str, None] = {}
    for match in _TERM.finditer(text):
        seen.setdefault(match.group().lower(), None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _any(terms: Sequence[str]) -> str:
    return " OR ".join(_phrase(t) for t in terms)


@dataclass(frozen=True)
class QueryPlan:
    """Which chunks BM25 scores: those matching ``gate``; ``rest`` terms only add to their scores.

    ``bounded``: the gate may still match more than the budget, so only its newest ``budget``
    matches in scope are scored.
    """

    gate: str
    rest: tuple[str, ...] = ()
    bounded: bool = False

    def expressions(self) -> list[str]:
        """FTS5 queries whose best scores per chunk, merged, give the exact top of the gate chunks.

        ``gate AND rest`` scores the chunks holding rest terms exactly; ``gate`` alone scores the
        others exactly and under-scores those, which the first query ranks anyway: a chunk without
        rest terms in the true top n is in the gate-only top n (every chunk above it there is above
        it in truth), and an under-scored chunk missing from the first query's top n has n exact
        scores above it. Cheaper than ``gate NOT rest``, which would count the rest terms twice.
        """
        if not self.rest:
            return [self.gate]
        return [f"({self.gate}) AND ({_any(self.rest)})", self.gate]


def plan_query(terms: Sequence[str], df: dict[str, int], total: int, budget: int) -> QueryPlan | None:
    """Plan a lexical query from its terms' document frequencies (``None`` when there are no terms).

    Exact BM25 (one OR of every term) while the summed frequencies fit ``budget``. Beyond it:
    terms in at least half the chunks are dropped (FTS5's BM25 gives them ~zero weight anyway);
    the rarest terms whose frequencies fit the budget form the *gate* (or, when no single term is
    rare enough, the conjunction of the rarest few, ``bounded``); the other kept terms are scored
    for gate chunks without widening the set. So work stays near ``budget`` chunks while the chunks
    most likely to rank first, those holding the rarest terms, get their exact score.
    """
    if not terms:
        return None
    if budget <= 0 or sum(df.get(t, 0) for t in terms) <= budget:
        return QueryPlan(_any(terms))
    kept = sorted((t for t in terms if df.get(t, 0) < total / 2), key=lambda t: df.get(t, 0))
    if not kept:
        kept = [min(terms, key=lambda t: df.get(t, 0))]
    if sum(df.get(t, 0) for t in kept) <= budget:
        return QueryPlan(_any(kept))
    gate: list[str] = []
    spent = 0
    for term in kept:
        if spent + df.get(term, 0) > budget:
            break
        gate.append(term)
        spent += df.get(term, 0)
    if gate:
        return QueryPlan(_any(gate), tuple(kept[len(gate):]))
    gate = [kept[0]]
    estimate = float(df.get(kept[0], 0))
    for term in kept[1:]:
        if estimate <= budget:
            break
        gate.append(term)
        estimate *= df.get(term, 0) / max(total, 1)
    return QueryPlan(" AND ".join(_phrase(t) for t in gate), tuple(kept[len(gate):]), bounded=True)


# -- filters --------------------------------------------------------------------------------------

_COMPARISONS = {"eq": "=", "ne": "IS NOT", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _scalar(value: Any, where: str) -> str | int | float | bool:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise InvalidRequest(f"{where}: value must be a string, number or boolean", param="filters")


def compile_filter(spec: dict[str, Any], column: str = "c.attributes") -> tuple[str, list[Any]]:
    """SQL boolean expression and its parameters for an OpenAI vector store filter.

    Keys and values are always bound parameters; ``column`` is a trusted identifier. A missing
    attribute never equals anything, so ``ne`` and ``nin`` match it. Ordering comparisons only
    hold between values of the same kind (numbers with numbers, strings with strings).
    """
    nodes = 0

    def walk(node: Any, depth: int) -> tuple[str, list[Any]]:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_FILTER_NODES or depth > MAX_FILTER_DEPTH:
            raise InvalidRequest("filters: too large or too deeply nested", param="filters")
        if not isinstance(node, dict):
            raise InvalidRequest("filters: each filter must be an object", param="filters")
        kind = node.get("type")
        if kind in ("and", "or"):
            children = node.get("filters")
            if not isinstance(children, list) or not children or set(node) - {"type", "filters"}:
                raise InvalidRequest(f"filters: '{kind}' takes a non-empty 'filters' list", param="filters")
            parts = [walk(child, depth + 1) for child in children]
            joiner = " AND " if kind == "and" else " OR "
            return "(" + joiner.join(p for p, _ in parts) + ")", [v for _, ps in parts for v in ps]
        if kind not in _COMPARISONS and kind not in ("in", "nin"):
            raise InvalidRequest(f"filters: unknown filter type {kind!r}", param="filters")
        key = node.get("key")
        if (not isinstance(key, str) or not 0 < len(key) <= 64 or _BAD_KEY.search(key)
                or set(node) - {"type", "key", "value"}):
            raise InvalidRequest("filters: 'key' must be a string of 1-64 characters without quotes", param="filters")
        if "value" not in node:
            raise InvalidRequest(f"filters: {kind!r} filter on {key!r} needs a 'value'", param="filters")
        path = '$."' + key + '"'
        value = node["value"]
        extract = f"json_extract({column}, ?)"
        if kind in ("in", "nin"):
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise InvalidRequest(f"filters: {kind!r} takes a list of at most {MAX_IN_VALUES} values",
                                     param="filters")
            values = [_scalar(v, f"filters: {kind} on {key!r}") for v in value]
            if not values:
                return ("0" if kind == "in" else "1"), []
            marks = ",".join("?" * len(values))
            if kind == "in":
                return f"({extract} IN ({marks}))", [path, *values]
            return f"({extract} IS NULL OR {extract} NOT IN ({marks}))", [path, path, *values]
        scalar = _scalar(value, f"filters: {kind} on {key!r}")
        if kind in ("eq", "ne"):
            return f"({extract} {_COMPARISONS[kind]} ?)", [path, scalar]
        kinds = "('text')" if isinstance(scalar, str) else "('integer','real','true','false')"
        return (f"(json_type({column}, ?) IN {kinds} AND {extract} {_COMPARISONS[kind]} ?)",
                [path, path, scalar])

    return walk(spec, 0)


def fuse(*rankings: list[tuple[int, float]], rrf_k: int = 60, k: int = 8) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score = sum(1 / (rrf_k + rank))`` over rankings (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (rowid, _) in enumerate(ranking, start=1):
            fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]


# -- dense index ----------------------------------------------------------------------------------


def _pack(vector: Sequence[float]) -> bytes:
    packed = array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        packed.byteswap()
    return packed.tobytes()


def _similarities(matrix: Any, query: Any) -> Any:
    """Dot products of unit rows with a unit query: numpy's own single-threaded loop, not BLAS.

    BLAS sgemv is multi-threaded; on a loaded 2-core host its threads fight the FTS5 thread of the
    same hybrid query and other searches, which measured worse at p95 than one thread per query.
    """
    return np.einsum("ij,j->i", matrix, query)


MAX_SEGMENTS = 8
DELETION_LOG = 512  # versions of deleted id ranges kept for incremental dense refreshes


@dataclass(frozen=True)
class _Segment:
    """Vectors loaded together: ascending row ids, unit-norm float32 rows, which are still alive."""

    rowids: Any                # np.ndarray[int64], shape (n,)
    matrix: Any                # np.ndarray[float32], shape (n, dim)
    alive: Any = None          # np.ndarray[bool], shape (n,); None when every row is
    dead: int = 0

    def kill(self, ranges: Sequence[tuple[int, int]]) -> _Segment:
        """This segment with the rows whose ids fall in any ``(lo, hi)`` range marked dead."""
        alive = np.ones(len(self.rowids), dtype=bool) if self.alive is None else self.alive.copy()
        for lo, hi in ranges:
            alive[np.searchsorted(self.rowids, lo, "left"):np.searchsorted(self.rowids, hi, "right")] = False
        dead = int(len(alive) - np.count_nonzero(alive))
        return _Segment(self.rowids, self.matrix, alive if dead else None, dead)

    def restrict(self, survivors: Any) -> _Segment:
        """This segment with the rows missing from ``survivors`` (sorted ids) marked dead."""
        if not len(self.rowids):
            return self
        at = np.minimum(np.searchsorted(survivors, self.rowids), max(len(survivors) - 1, 0))
        alive = survivors[at] == self.rowids if len(survivors) else np.zeros(len(self.rowids), dtype=bool)
        dead = int(len(alive) - np.count_nonzero(alive))
        return _Segment(self.rowids, self.matrix, alive if dead else None, dead)


def _merge(segments: Sequence[_Segment]) -> _Segment:
    rowids = [s.rowids if s.alive is None else s.rowids[s.alive] for s in segments]
    rows = [s.matrix if s.alive is None else s.matrix[s.alive] for s in segments]
    return _Segment(np.concatenate(rowids), np.concatenate(rows))


@dataclass(frozen=True)
class _DenseEntry:
    """One dataset's vectors by dimension, as of ``version``."""

    version: int
    max_id: int
    groups: dict[int, tuple[_Segment, ...]]

    @property
    def nbytes(self) -> int:
        return sum(s.matrix.nbytes + s.rowids.nbytes for segs in self.groups.values() for s in segs)

    def similarities(self, query: Any) -> tuple[Any, Any] | None:
        """(cosine similarities, row ids) of the live rows of the query's dimension."""
        segments = self.groups.get(query.shape[0])
        if not segments:
            return None
        scores, rowids = [], []
        for seg in segments:
            part = _similarities(seg.matrix, query)
            if seg.alive is not None:
                part, ids = part[seg.alive], seg.rowids[seg.alive]
            else:
                ids = seg.rowids
            scores.append(part)
            rowids.append(ids)
        if len(scores) == 1:
            return scores[0], rowids[0]
        return np.concatenate(scores), np.concatenate(rowids)


def refresh_dense(db: sqlite3.Connection, workspace: str, dataset: str, version: int, logged_after: int,
                  old: _DenseEntry | None) -> _DenseEntry:
    """``old`` brought up to date: rows deleted since are masked, rows added since are loaded.

    Chunk ids only grow (``AUTOINCREMENT``), so new rows are those above ``old.max_id``. Deletions
    are logged as id ranges per version (a file's rows, inserted in one transaction, form one
    range), and masking a range costs two binary searches. When the log no longer reaches back
    to ``old.version`` (``logged_after``), the surviving ids are read instead. All segments are
    merged when a quarter of their rows are dead, the smaller half when there are too many.
    """
    groups: dict[int, list[_Segment]] = {dim: list(segs) for dim, segs in old.groups.items()} if old else {}
    max_id = old.max_id if old else 0
    if old is not None and groups and old.version < logged_after:
        survivors = np.fromiter((r for (r,) in db.execute(
            "SELECT id FROM chunk_vectors WHERE workspace = ? AND dataset = ? AND id <= ? ORDER BY id",
            (workspace, dataset, max_id))), dtype=np.int64)
        groups = {dim: [seg.restrict(survivors) for seg in segs] for dim, segs in groups.items()}
    elif old is not None and groups:
        ranges = db.execute("SELECT lo, hi FROM deletions WHERE workspace = ? AND dataset = ? AND version > ?",
                            (workspace, dataset, old.version)).fetchall()
        if ranges:
            groups = {dim: [seg.kill(ranges) for seg in segs] for dim, segs in groups.items()}
    fresh: dict[int, tuple[list[int], list[bytes]]] = {}
    for rowid, blob in db.execute(
        "SELECT id, vector FROM chunk_vectors WHERE workspace = ? AND dataset = ? AND id > ? ORDER BY id",
        (workspace, dataset, max_id),
    ):
        ids, blobs = fresh.setdefault(len(blob) // 4, ([], []))
        ids.append(rowid)
        blobs.append(blob)
        max_id = rowid
    for dim, (ids, blobs) in fresh.items():
        if dim == 0:
            continue
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), dim).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        matrix /= norms
        groups.setdefault(dim, []).append(_Segment(np.asarray(ids, dtype=np.int64), matrix))
    compacted: dict[int, tuple[_Segment, ...]] = {}
    for dim, segs in groups.items():
        segs = [s for s in segs if s.dead < len(s.rowids)]
        if sum(s.dead for s in segs) * 4 > sum(len(s.rowids) for s in segs):
            segs = [_merge(segs)]
        elif len(segs) > MAX_SEGMENTS:  # merge the smaller half: rows are copied O(log n) times
            segs.sort(key=lambda s: len(s.rowids), reverse=True)
            keep = len(segs) // 2
            segs = [*segs[:keep], _merge(segs[keep:])]
        if segs:
            compacted[dim] = tuple(segs)
    return _DenseEntry(version=version, max_id=max_id, groups=compacted)


def _unit(vector: Sequence[float]) -> Any:
    """``vector`` as a unit float32 array, or ``None`` when it is empty, zero or not finite."""
    query = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(query)) if query.ndim == 1 and query.size else 0.0
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return query / norm


def _similarity_arrays(entries: Sequence[_DenseEntry], query: Any) -> tuple[Any, Any] | None:
    """(similarities, row ids) over the live rows of ``entries`` with the query's dimension."""
    found = [f for f in (e.similarities(query) for e in entries) if f is not None and len(f[1])]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


class _DenseCache:
    """Per-(workspace, dataset) dense entries, refreshed when the dataset's version moves (LRU by bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _DenseEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def get(self, db: sqlite3.Connection, workspace: str, dataset: str, version: int, logged_after: int) -> _DenseEntry:
        key = (workspace, dataset)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version >= version:
                self._entries.move_to_end(key)
                return entry
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                return entry
            if entry is not None and entry.version > version:
                # another search already refreshed past this snapshot: its extra rows are not
                # visible here and are dropped when filtering or hydrating
                return entry
            entry = refresh_dense(db, workspace, dataset, version, logged_after, entry)
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                used = sum(e.nbytes for e in self._entries.values())
                while used > self.max_bytes and len(self._entries) > 1:
                    _, old = self._entries.popitem(last=False)
                    used -= old.nbytes
            return entry

    def drop(self, workspace: str, dataset: str) -> None:
        with self._lock:
            self._entries.pop((workspace, dataset), None)


# -- document frequencies (planning only) ---------------------------------------------------------


class _Frequencies:
    """Cached document frequencies and chunk total, used only to plan queries (never to score).

    Entries expire after ``ttl`` seconds or when the total has moved by more than 10% since they
    were read, so stale values can only make a query slower or its gate wider, never wrong.
    """

    def __init__(self, ttl: float = 300.0, size: int = 50_000) -> None:
        self.ttl = ttl
        self.size = size
        self._df: OrderedDict[str, tuple[int, int, float]] = OrderedDict()
        self._total: tuple[int, float] | None = None
        self._lock = threading.Lock()

    def adjust_total(self, change: int) -> None:
        """Follow this process's own writes (other processes' show after ``ttl``)."""
        with self._lock:
            if self._total is not None:
                self._total = (max(0, self._total[0] + change), self._total[1])

    def total(self, db: sqlite3.Connection) -> int:
        now = time.monotonic()
        with self._lock:
            if self._total is not None and now - self._total[1] < self.ttl:
                return self._total[0]
        total = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        with self._lock:
            self._total = (total, now)
        return int(total)

    def df(self, db: sqlite3.Connection, terms: Sequence[str], total: int) -> dict[str, int]:
        now = time.monotonic()
        out: dict[str, int] = {}
        missing: list[str] = []
        with self._lock:
            for term in terms:
                cached = self._df.get(term)
                if cached and now - cached[2] < self.ttl and abs(total - cached[1]) <= 0.1 * cached[1] + 100:
                    out[term] = cached[0]
                else:
                    missing.append(term)
        cap = total // 2 + 1  # past half the chunks a term is dropped anyway: stop counting there
        for term in missing:
            out[term] = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                (_phrase(term), cap)).fetchone()[0]
        with self._lock:
            for term in missing:
                self._df[term] = (out[term], total, now)
                self._df.move_to_end(term)
            while len(self._df) > self.size:
                self._df.popitem(last=False)
        return out


# -- the driver -----------------------------------------------------------------------------------


class SqliteVectorStore(VectorStoreDriver):
    """The embedded default store: SQLite + FTS5 + exact dense search, fused by reciprocal rank."""

    settings_type: ClassVar[type[VectorStoreSettings]] = SqliteVectorStoreSettings
    settings: SqliteVectorStoreSettings

    def __init__(self, settings: VectorStoreSettings, data_dir: Path) -> None:
        super().__init__(settings, data_dir)
        assert isinstance(settings, SqliteVectorStoreSettings)
        if not _TOKENIZER.match(settings.tokenizer):
            raise ValueError("vector_store.tokenizer: only letters, digits, '_' and spaces are allowed")
        if settings.readers < 1 or settings.candidates < 1 or settings.rrf_k < 0:
            raise ValueError("vector_store: readers and candidates must be >= 1, rrf_k >= 0")
        path = Path(settings.path) if settings.path else Path("knowledge.sqlite3")
        self.path = path if path.is_absolute() else data_dir / path
        self.dense_available = settings.dense and np is not None
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._write_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._compute_pool: ThreadPoolExecutor | None = None
        self._dense = _DenseCache(settings.dense_cache_mb * 1024 * 1024)
        self._freq = _Frequencies()
        self._weights = (1.0, float(settings.title_weight), float(settings.headings_weight))

    # -- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.settings.busy_timeout)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-32768")
        return db

    def open(self) -> None:
        """Create the file and schema and open the connections (synchronous; :meth:`start` wraps it)."""
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        try:
            writer.execute("PRAGMA journal_mode=WAL")
            version = writer.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(f"{self.path}: unknown vector store schema version {version}")
            writer.executescript(SCHEMA.replace("{tokenizer}", self.settings.tokenizer))
            writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        for _ in range(self.settings.readers):
            reader = self._connect()
            self._all_readers.append(reader)
            self._readers.put(reader)
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="chorus-vs-write")
        self._read_pool = ThreadPoolExecutor(self.settings.readers, thread_name_prefix="chorus-vs-read")
        self._compute_pool = ThreadPoolExecutor(self.settings.readers, thread_name_prefix="chorus-vs-dense")
        if self.settings.dense and np is None:
            log.warning("numpy is not installed: vectors are stored but searches are lexical only")

    def close(self) -> None:
        """Close every connection and worker thread (idempotent)."""
        for pool in (self._write_pool, self._read_pool, self._compute_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._write_pool = self._read_pool = self._compute_pool = None
        for reader in self._all_readers:
            reader.close()
        self._all_readers.clear()
        self._readers = queue.SimpleQueue()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._write_pool is None:
            raise RuntimeError("vector store is not started")

        def run() -> T:
            with self._write_lock:
                assert self._writer is not None
                return fn(self._writer)

        return await asyncio.get_running_loop().run_in_executor(self._write_pool, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_pool is None:
            raise RuntimeError("vector store is not started")

        def run() -> T:
            db = self._readers.get()
            try:
                return fn(db)
            finally:
                if db.in_transaction:
                    db.rollback()
                self._readers.put(db)

        return await asyncio.get_running_loop().run_in_executor(self._read_pool, run)

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.rollback()
            raise
        db.commit()

    # -- writes -------------------------------------------------------------------------------

    @staticmethod
    def _delete(db: sqlite3.Connection, workspace: str, dataset: str,
                file_id: str | None) -> tuple[int, list[tuple[int, int]]]:
        """Delete a file's (or the dataset's) rows; returns how many and their id ranges."""
        if file_id is None:
            lo, hi = db.execute("SELECT min(id), max(id) FROM chunks WHERE workspace = ? AND dataset = ?",
                                (workspace, dataset)).fetchone()
            if lo is None:
                return 0, []
            removed = db.execute("DELETE FROM chunks WHERE workspace = ? AND dataset = ?",
                                 (workspace, dataset)).rowcount
            return removed, [(lo, hi)]   # every row of the dataset in this range goes
        ranges: list[tuple[int, int]] = []
        for (rowid,) in db.execute("SELECT id FROM chunks WHERE workspace = ? AND dataset = ? AND file_id = ?"
                                   " ORDER BY id", (workspace, dataset, file_id)):
            if ranges and ranges[-1][1] == rowid - 1:
                ranges[-1] = (ranges[-1][0], rowid)
            else:
                ranges.append((rowid, rowid))
        if not ranges:
            return 0, []
        removed = db.execute("DELETE FROM chunks WHERE workspace = ? AND dataset = ? AND file_id = ?",
                             (workspace, dataset, file_id)).rowcount
        return removed, ranges

    @staticmethod
    def _bump(db: sqlite3.Connection, workspace: str, dataset: str, ranges: list[tuple[int, int]]) -> None:
        """Next dataset version, logging the id ranges it deleted (the dense index masks them).

        The log keeps the last ``DELETION_LOG`` versions; ``logged_after`` says where it starts.
        """
        (version,) = db.execute(
            "INSERT INTO datasets (workspace, dataset, version, logged_after) VALUES (?, ?, 1, 0)"
            " ON CONFLICT (workspace, dataset) DO UPDATE SET version = version + 1 RETURNING version",
            (workspace, dataset)).fetchone()
        db.executemany("INSERT INTO deletions (workspace, dataset, version, lo, hi) VALUES (?, ?, ?, ?, ?)",
                       [(workspace, dataset, version, lo, hi) for lo, hi in ranges])
        if version % 64 == 0 and version > DELETION_LOG:
            db.execute("DELETE FROM deletions WHERE workspace = ? AND dataset = ? AND version <= ?",
                       (workspace, dataset, version - DELETION_LOG))
            db.execute("UPDATE datasets SET logged_after = ? WHERE workspace = ? AND dataset = ?",
                       (version - DELETION_LOG, workspace, dataset))

    def replace_file_sync(self, db: sqlite3.Connection, workspace: str, dataset: str, file_id: str,
                          chunks: Sequence[Chunk]) -> int:
        """The body of :meth:`replace_file` on a given connection (one ``BEGIN IMMEDIATE`` transaction).

        Returns the change in the number of chunks.
        """
        for chunk in chunks:
            if (chunk.workspace, chunk.dataset, chunk.file_id) != (workspace, dataset, file_id):
                raise ValueError(f"chunk {chunk.id!r} does not belong to {workspace}/{dataset}/{file_id}")
        rows = [
            (workspace, dataset, file_id, c.index, c.id, c.text, c.title,
             json.dumps(c.headings, ensure_ascii=False), c.url, c.source, c.start, c.end,
             json.dumps(c.attributes, ensure_ascii=False))
            for c in chunks
        ]
        with self._transaction(db):
            removed, ranges = self._delete(db, workspace, dataset, file_id)
            db.executemany(_INSERT, rows)
            if self.settings.dense and any(c.vector is not None for c in chunks):
                ids = dict(db.execute(
                    "SELECT idx, id FROM chunks WHERE workspace = ? AND dataset = ? AND file_id = ?",
                    (workspace, dataset, file_id)).fetchall())
                db.executemany(
                    "INSERT INTO chunk_vectors (id, workspace, dataset, vector) VALUES (?, ?, ?, ?)",
                    [(ids[c.index], workspace, dataset, _pack(c.vector)) for c in chunks if c.vector],
                )
            self._bump(db, workspace, dataset, ranges)
        return len(rows) - removed

    async def replace_file(self, workspace: str, dataset: str, file_id: str, chunks: list[Chunk]) -> None:
        change = await self._write(lambda db: self.replace_file_sync(db, workspace, dataset, file_id, chunks))
        self._freq.adjust_total(change)

    async def _remove(self, workspace: str, dataset: str, file_id: str | None) -> int:
        def work(db: sqlite3.Connection) -> int:
            with self._transaction(db):
                removed, ranges = self._delete(db, workspace, dataset, file_id)
                if ranges:
                    self._bump(db, workspace, dataset, ranges)
            return removed

        removed = await self._write(work)
        self._freq.adjust_total(-removed)
        return removed

    async def delete_file(self, workspace: str, dataset: str, file_id: str) -> int:
        return await self._remove(workspace, dataset, file_id)

    async def delete_dataset(self, workspace: str, dataset: str) -> int:
        removed = await self._remove(workspace, dataset, None)
        self._dense.drop(workspace, dataset)
        return removed

    async def count(self, workspace: str, dataset: str, file_id: str | None = None) -> int:
        sql = "SELECT count(*) FROM chunks WHERE workspace = ? AND dataset = ?"
        params: tuple[str, ...] = (workspace, dataset)
        if file_id is not None:
            sql, params = sql + " AND file_id = ?", (*params, file_id)
        return int(await self._read(lambda db: db.execute(sql, params).fetchone()[0]))

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
        where, params = compile_filter(filters) if filters else ("1", [])
        datasets = list(dict.fromkeys(datasets))
        terms = query_terms(query)
        unit = _unit(vector) if vector and self.dense_available else None
        if k <= 0 or not datasets or not (terms or unit is not None):
            return []
        return await self._read(lambda db: self._search(db, workspace, datasets, terms, unit, k, where, params))

    def _search(self, db: sqlite3.Connection, workspace: str, datasets: list[str], terms: list[str], unit: Any,
                k: int, where: str, params: list[Any]) -> list[SearchHit]:
        """Rank, fuse and hydrate in one read transaction, so results are one consistent snapshot.

        In hybrid searches the dense dot products run on the compute pool while this thread runs
        FTS5 (both release the GIL); only numpy arrays cross over, every SQL read stays here.
        """
        with self._snapshot(db):
            entries = self._dense_entries(db, workspace, datasets) if unit is not None else []
            pending = None
            if entries and terms:
                assert self._compute_pool is not None
                pending = self._compute_pool.submit(_similarity_arrays, entries, unit)
            depth = max(k, self.settings.candidates) if entries and terms else k
            lexical = self._lexical(db, workspace, datasets, terms, depth, where, params)
            dense: list[tuple[int, float]] = []
            if entries:
                arrays = pending.result() if pending is not None else _similarity_arrays(entries, unit)
                if arrays is not None:
                    dense = self._top(db, workspace, *arrays, depth, where, params)
            if lexical and dense:
                ranked = fuse(lexical, dense, rrf_k=self.settings.rrf_k, k=k)
            else:
                ranked = (lexical or dense)[:k]
            return self._hydrate(db, workspace, ranked)

    @contextmanager
    def _snapshot(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN")
        try:
            yield
        finally:
            db.rollback()

    def _lexical(self, db: sqlite3.Connection, workspace: str, datasets: list[str], terms: list[str], limit: int,
                 where: str, params: list[Any]) -> list[tuple[int, float]]:
        if not terms:
            return []
        budget = self.settings.match_budget
        total = self._freq.total(db)
        plan = plan_query(terms, self._freq.df(db, terms, total) if budget > 0 else {}, total, budget)
        if plan is None:
            return []
        marks = ",".join("?" * len(datasets))
        scope = f"c.workspace = ? AND c.dataset IN ({marks}) AND {where}"
        scope_params = (workspace, *datasets, *params)
        floor = 0
        if plan.bounded:
            row = db.execute(
                "SELECT chunks_fts.rowid FROM chunks_fts CROSS JOIN chunks AS c ON c.id = chunks_fts.rowid"
                f" WHERE chunks_fts MATCH ? AND {scope} ORDER BY chunks_fts.rowid DESC LIMIT 1 OFFSET ?",
                (plan.gate, *scope_params, budget - 1)).fetchone()
            floor = row[0] if row else 0
        sql = (
            "SELECT c.id, bm25(chunks_fts, ?, ?, ?) AS score FROM chunks_fts CROSS JOIN chunks AS c"
            f" ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ? AND chunks_fts.rowid >= ? AND {scope}"
            " ORDER BY score, c.id LIMIT ?"
        )
        best: dict[int, float] = {}
        for expression in plan.expressions():
            for rowid, score in db.execute(sql, (*self._weights, expression, floor, *scope_params, limit)):
                best[rowid] = min(score, best.get(rowid, score))   # bm25(): lower is better
        ranked = sorted(best.items(), key=lambda row: (row[1], row[0]))[:limit]
        return [(rowid, -score) for rowid, score in ranked]

    def _dense_entries(self, db: sqlite3.Connection, workspace: str, datasets: list[str]) -> list[_DenseEntry]:
        marks = ",".join("?" * len(datasets))
        return [self._dense.get(db, workspace, dataset, version, logged) for dataset, version, logged in db.execute(
            f"SELECT dataset, version, logged_after FROM datasets WHERE workspace = ? AND dataset IN ({marks})",
            (workspace, *datasets)).fetchall()]

    def _top(self, db: sqlite3.Connection, workspace: str, scores: Any, rowids: Any, limit: int, where: str,
             params: list[Any]) -> list[tuple[int, float]]:
        """The ``limit`` best rows passing the filter, widening the window until enough pass."""
        window = limit if where == "1" else limit * 4
        while True:
            window = min(window, len(scores))
            top = np.argpartition(-scores, window - 1)[:window] if window < len(scores) else np.arange(len(scores))
            top = top[np.lexsort((rowids[top], -scores[top]))]
            ranking = [(int(rowids[i]), float(scores[i])) for i in top]
            if where != "1":
                allowed = self._allowed(db, workspace, [r for r, _ in ranking], where, params)
                ranking = [item for item in ranking if item[0] in allowed]
            if len(ranking) >= limit or window >= len(scores):
                return ranking[:limit]
            window *= 4

    @staticmethod
    def _allowed(db: sqlite3.Connection, workspace: str, rowids: list[int], where: str, params: list[Any]) -> set[int]:
        allowed: set[int] = set()
        for start in range(0, len(rowids), 500):
            part = rowids[start:start + 500]
            allowed.update(r for (r,) in db.execute(
                f"SELECT c.id FROM chunks AS c WHERE +c.workspace = ? AND c.id IN ({','.join('?' * len(part))})"
                f" AND {where}", (workspace, *part, *params)))
        return allowed

    @staticmethod
    def _hydrate(db: sqlite3.Connection, workspace: str, ranked: list[tuple[int, float]]) -> list[SearchHit]:
        if not ranked:
            return []
        rows: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(ranked), 500):
            part = [rowid for rowid, _ in ranked[start:start + 500]]
            rows.update((row[0], row) for row in db.execute(_HYDRATE.format(marks=",".join("?" * len(part))),
                                                             (workspace, *part)))
        hits: list[SearchHit] = []
        for rowid, score in ranked:
            row = rows.get(rowid)
            if row is None:
                continue
            _, chunk_id, dataset, file_id, idx, text, title, headings, url, source, start, end, attributes = row
            hits.append(SearchHit(score=score, chunk=Chunk(
                id=chunk_id, workspace=workspace, dataset=dataset, file_id=file_id, index=idx, text=text,
                title=title, headings=json.loads(headings), url=url, source=source, start=start, end=end,
                attributes=json.loads(attributes),
            )))
        return hits
