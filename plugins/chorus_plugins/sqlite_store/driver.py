"""The ``sqlite`` vector store driver: writes, lexical/dense/hybrid search and hydration of hits."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from chorus.sqlitedb import immediate
from chorus.vectorstores import Chunk, SearchHit, VectorStoreDriver, VectorStoreSettings
from chorus_plugins.sqlite_store.connections import SqliteConnections
from chorus_plugins.sqlite_store.dense import (
    HAS_NUMPY,
    _best_first,
    _DenseCache,
    _DenseEntry,
    _pack,
    _similarity_arrays,
    _unit,
)
from chorus_plugins.sqlite_store.filters import compile_filter
from chorus_plugins.sqlite_store.fusion import fuse
from chorus_plugins.sqlite_store.lexical import _Frequencies, _phrase, fts5_idf, plan_query, query_terms, term_weight
from chorus_plugins.sqlite_store.schema import _HYDRATE, _INSERT, _TOKENIZER, lexical_index
from chorus_plugins.sqlite_store.settings import SqliteVectorStoreSettings

DELETION_LOG = 512  # versions of deleted id ranges kept for incremental dense refreshes
NEGLIGIBLE_TERM = 0.05  # small-corpus ranking skips terms weighing less than this share of the heaviest


class SqliteVectorStore(SqliteConnections, VectorStoreDriver):
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
        self.dense_available = settings.dense and HAS_NUMPY
        self._init_connections()
        self._dense = _DenseCache(settings.dense_cache_mb * 1024 * 1024)
        self._freq = _Frequencies()
        self._weights = (1.0, float(settings.title_weight), float(settings.headings_weight))

    # -- writes -------------------------------------------------------------------------------

    @staticmethod
    def _delete(db: sqlite3.Connection, workspace: str, dataset: str,
                file_id: str | None) -> tuple[int, list[tuple[int, int]]]:
        """Delete a file's (or the dataset's) rows and their index entries; returns how many and their id ranges."""
        scope = "workspace = ? AND dataset = ?" + (" AND file_id = ?" if file_id is not None else "")
        params = (workspace, dataset) if file_id is None else (workspace, dataset, file_id)
        ranges: list[tuple[int, int]] = []
        if file_id is None:
            lo, hi = db.execute(f"SELECT min(id), max(id) FROM chunks WHERE {scope}", params).fetchone()
            if lo is None:
                return 0, []
            ranges.append((lo, hi))   # every row of the dataset in this range goes
        else:
            for (rowid,) in db.execute(f"SELECT id FROM chunks WHERE {scope} ORDER BY id", params):
                if ranges and ranges[-1][1] == rowid - 1:
                    ranges[-1] = (ranges[-1][0], rowid)
                else:
                    ranges.append((rowid, rowid))
            if not ranges:
                return 0, []
        index = lexical_index(db, workspace)
        if index is not None:  # an external-content index forgets rows given their indexed values
            db.execute(f"INSERT INTO {index} ({index}, rowid, text, title, headings)"
                       f" SELECT 'delete', id, text, title, headings FROM chunks WHERE {scope}", params)
        removed = db.execute(f"DELETE FROM chunks WHERE {scope}", params).rowcount
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
        with immediate(db):
            removed, ranges = self._delete(db, workspace, dataset, file_id)
            db.executemany(_INSERT, rows)
            if rows:
                index = lexical_index(db, workspace, create=True, tokenizer=self.tokenizer)
                db.execute(f"INSERT INTO {index} (rowid, text, title, headings) SELECT id, text, title, headings"
                           " FROM chunks WHERE workspace = ? AND dataset = ? AND file_id = ?",
                           (workspace, dataset, file_id))
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
        self._freq.adjust_total(workspace, change)

    async def _remove(self, workspace: str, dataset: str, file_id: str | None) -> int:
        def work(db: sqlite3.Connection) -> int:
            with immediate(db):
                removed, ranges = self._delete(db, workspace, dataset, file_id)
                if ranges:
                    self._bump(db, workspace, dataset, ranges)
            return removed

        removed = await self._write(work)
        self._freq.adjust_total(workspace, -removed)
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

    def _lexical(self, db: sqlite3.Connection, workspace: str, datasets: list[str], terms: list[str], limit: int,
                 where: str, params: list[Any]) -> list[tuple[int, float]]:
        if not terms:
            return []
        index = lexical_index(db, workspace)
        if index is None:  # nothing of this workspace was ever indexed
            return []
        budget = self.settings.match_budget
        total = self._freq.total(db, workspace)
        marks = ",".join("?" * len(datasets))
        scope = f"c.workspace = ? AND c.dataset IN ({marks}) AND {where}"
        scope_params = (workspace, *datasets, *params)
        if total <= self.settings.small_corpus_chunks:
            return self._small_corpus(db, workspace, index, terms, limit, scope, scope_params)
        df = self._freq.df(db, workspace, index, terms, total) if budget > 0 else {}
        plan = plan_query(terms, df, total, budget)
        if plan is None:
            return []
        floor = 0
        if plan.bounded:
            row = db.execute(
                f"SELECT {index}.rowid FROM {index} CROSS JOIN chunks AS c ON c.id = {index}.rowid"
                f" WHERE {index} MATCH ? AND {scope} ORDER BY {index}.rowid DESC LIMIT 1 OFFSET ?",
                (plan.gate, *scope_params, budget - 1)).fetchone()
            floor = row[0] if row else 0
        sql = (
            f"SELECT c.id, bm25({index}, ?, ?, ?) AS score FROM {index} CROSS JOIN chunks AS c"
            f" ON c.id = {index}.rowid WHERE {index} MATCH ? AND {index}.rowid >= ? AND {scope}"
            " ORDER BY score, c.id LIMIT ?"
        )
        best: dict[int, float] = {}
        for expression in plan.expressions():
            for rowid, score in db.execute(sql, (*self._weights, expression, floor, *scope_params, limit)):
                best[rowid] = min(score, best.get(rowid, score))   # bm25(): lower is better
        ranked = sorted(best.items(), key=lambda row: (row[1], row[0]))[:limit]
        return [(rowid, -score) for rowid, score in ranked]

    def _small_corpus(self, db: sqlite3.Connection, workspace: str, index: str, terms: list[str], limit: int,
                      scope: str, scope_params: tuple[Any, ...]) -> list[tuple[int, float]]:
        """BM25 over every query term with a positive IDF, for workspaces of at most ``small_corpus_chunks``.

        FTS5's ``bm25()`` gives a term found in half the chunks or more an IDF of 1e-6. In a large
        corpus those are stop words; in a knowledge base of a few documents they are the words the
        question is about ("support" in two of three chunks), and a ranking that ignores them finds
        nothing useful. Here each term is scored on its own: its ``bm25()`` divided by FTS5's IDF
        is the term's saturated, length-normalised frequency (column weights included), which is
        multiplied by :func:`term_weight` (Lucene's always-positive IDF, a tenth for stop words)
        and summed over the terms. Every chunk holding a term is scored (one FTS5 query per term,
        cheap at this size); terms weighing less than ``NEGLIGIBLE_TERM`` of the heaviest one (a
        stop word found in most chunks) are skipped, which keeps the cost near that of one query.
        """
        (rows,) = db.execute("SELECT count(*) FROM chunks WHERE workspace = ?", (workspace,)).fetchone()
        count = f"SELECT count(*) FROM {index} WHERE {index} MATCH ?"
        sql = (
            f"SELECT c.id, bm25({index}, ?, ?, ?) FROM {index} CROSS JOIN chunks AS c"
            f" ON c.id = {index}.rowid WHERE {index} MATCH ? AND {scope}"
        )
        weighted: list[tuple[str, float, float]] = []
        for term in terms:
            phrase = _phrase(term)
            (matches,) = db.execute(count, (phrase,)).fetchone()
            if matches:
                weighted.append((phrase, term_weight(term, rows, matches), fts5_idf(rows, matches)))
        heaviest = max((weight for _, weight, _ in weighted), default=0.0)
        scores: dict[int, float] = {}
        for phrase, weight, idf in weighted:
            if weight < NEGLIGIBLE_TERM * heaviest:   # a stop word in most chunks: it moves no ranking
                continue
            for rowid, score in db.execute(sql, (*self._weights, phrase, *scope_params)):
                scores[rowid] = scores.get(rowid, 0.0) - score * weight / idf   # bm25(): lower (negative) is better
        ranked = sorted(scores.items(), key=lambda row: (-row[1], row[0]))[:limit]
        return [(rowid, score) for rowid, score in ranked if score > 0]

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
            top = _best_first(scores, rowids, window)
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
