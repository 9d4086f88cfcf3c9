"""The ``pgvector`` driver on a real PostgreSQL with pgvector: the conformance kit, plus settings,
schema and migrations, per-workspace statistics, BM25 values, HNSW use and the error paths."""

from __future__ import annotations

import asyncio
import math
import random
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("chorus_vectorstore_pgvector", reason="chorus-vectorstore-pgvector is not installed")

from chorus_vectorstore_pgvector import PgvectorStore, PgvectorStoreSettings
from chorus_vectorstore_pgvector.schema import MIGRATIONS
from pgvector_testing import Conformance, PgvectorFactory, settings

from chorus.errors import ChorusError, ConfigError
from chorus.testing.gateway import load_driver
from chorus.testing.vectorstores import (
    CHECKS,
    FILLER,
    SCORING_CHECKS,
    Check,
    chunk,
    chunks,
    ids,
    kill_mid_write,
)


@pytest.mark.parametrize("check", CHECKS + SCORING_CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: Check, make_store: PgvectorFactory) -> None:
    await check(Conformance(make_store))


def test_registered_as_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="chorus.vector_stores") if e.name == "pgvector"]
    assert ep.load() is PgvectorStore
    assert PgvectorStore.settings_type is PgvectorStoreSettings


@pytest.mark.parametrize("raw", [
    {},                                               # url is required
    {"url": "http://db:5432/x"},
    {"url": "postgresql://db/x", "schema": "bad name"},
    {"url": "postgresql://db/x", "schema": 'x"; DROP TABLE y; --'},
    {"url": "postgresql://db/x", "text_search_config": "english; DROP"},
    {"url": "postgresql://db/x", "hnsw_ef_search": 0},
    {"url": "postgresql://db/x", "hnsw_ef_search": 1001},
    {"url": "postgresql://db/x", "pool_min_size": 5, "pool_max_size": 2},
    {"url": "postgresql://db/x", "bm25_b": 2.0},
    {"url": "postgresql://db/x", "rrf_k": -1},
    {"url": "postgresql://db/x", "unknown_key": 1},
])
def test_invalid_settings(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings(**raw)


def test_url_is_a_secret() -> None:
    s = settings(url="postgresql://chorus:pg-secret-value@db:5432/x")
    assert s.url.get().endswith("@db:5432/x") and "pg-secret-value" not in repr(s)
    assert "pg-secret-value" not in PgvectorStore(s, Path(".")).where


# -- schema and migrations ------------------------------------------------------------------------


async def test_instances_starting_together_migrate_once(make_store: PgvectorFactory) -> None:
    schema = f"{make_store.prefix}_together"  # type: ignore[attr-defined]
    stores = [await make_store(start=False, schema=schema) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))  # each takes the schema's advisory lock in turn
    await stores[0].replace_file("acme", "docs", "f", chunks("f", ["written by one"], vector=[1.0, 0.0]))
    assert [await ids(s, "written") for s in stores] == [["f:0"]] * 4
    async with stores[1]._connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM migrations") == len(MIGRATIONS)
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'text_search_config'") == "english"
    for s in stores:
        await s.aclose()


async def test_a_changed_text_search_config_is_refused(make_store: PgvectorFactory) -> None:
    first = await make_store(schema=f"{make_store.prefix}_cfg")  # type: ignore[attr-defined]
    await first.replace_file("acme", "docs", "f", chunks("f", ["running"]))
    await first.aclose()
    with pytest.raises(ConfigError, match="text_search_config"):
        await make_store(schema=f"{make_store.prefix}_cfg", text_search_config="simple")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="no text search configuration"):
        await make_store(schema=f"{make_store.prefix}_cfg2", text_search_config="klingon")  # type: ignore[attr-defined]


async def test_a_server_without_pgvector_is_a_clear_error(tmp_path: Path) -> None:
    """PostgreSQL 15 from Debian 12 (the state tests' server) has no pgvector: say what to install."""
    from chorus.testing.postgres import postgres_url

    url = await asyncio.to_thread(postgres_url)
    if url is None:
        pytest.skip("no plain PostgreSQL server to try (see chorus.testing.postgres)")
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        available = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
    finally:
        await conn.close()
    if available:
        pytest.skip("this PostgreSQL server has pgvector")
    store = PgvectorStore(settings(url=url, schema="t_no_pgvector"), tmp_path)
    with pytest.raises(ConfigError, match="pgvector"):
        await store.start()
    await store.aclose()


async def test_an_unreachable_server_is_a_503(tmp_path: Path) -> None:
    from chorus.testing.server import free_port

    store = PgvectorStore(settings(url=f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=2), tmp_path)
    with pytest.raises(ChorusError) as caught:
        await store.start()
    assert (caught.value.status_code, caught.value.code) == (503, "vector_store_unavailable")


async def test_lost_connections_are_a_503_and_the_pool_recovers(store: PgvectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["survives restarts"]))
    await asyncio.gather(*(ids(store, "survives") for _ in range(3)))  # several pooled connections
    killed = 0
    with pytest.raises(ChorusError) as lost:  # a connection lost in the middle of a statement
        async with store._connection() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'chorus-pgvector'"
                " AND datname = current_database() AND pid <> pg_backend_pid()")
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # and the one in hand
    assert (lost.value.status_code, lost.value.code) == (503, "vector_store_unavailable") and killed >= 1
    # every pooled connection is dead now; the failure above expired them all, so searches work again
    assert [await ids(store, "survives") for _ in range(5)] == [["f:0"]] * 5


# -- lexical ranking ------------------------------------------------------------------------------


async def test_bm25_statistics_are_per_workspace(store: PgvectorStore) -> None:
    """Another tenant's documents never move this tenant's scores (statistics are kept per workspace)."""
    await store.replace_file("acme", "docs", "a", chunks("a", ["widget manual", "gadget manual", "gizmo manual"]))
    before = [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")]
    await store.replace_file("globex", "docs", "g",
                             chunks("g", [f"widget manual {i}" for i in range(50)], workspace="globex"))
    assert [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")] == before
    await store.delete_file("globex", "docs", "g")
    assert [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")] == before
    async with store._connection() as conn:
        stats = {r[0]: r[1] for r in await conn.fetch("SELECT workspace, chunks FROM workspace_stats")}
        assert stats == {"acme": 3, "globex": 0}
        assert await conn.fetchval("SELECT df FROM term_stats WHERE workspace = 'acme' AND term = 'widget'") == 1
        assert await conn.fetchval("SELECT df FROM term_stats WHERE workspace = 'globex' AND term = 'widget'") == 0


async def test_bm25_scores_follow_the_documented_formula(store: PgvectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["alpha beta", "alpha gamma gamma", "delta"]))
    await store.replace_file("acme", "docs", "t", [chunk("t", 0, "epsilon", title="gamma")])
    k1, b = 1.2, 0.75
    lengths = [2, 3, 1, 1 + 2.0]        # the title counts title_weight (2.0) per token
    avg, n = sum(lengths) / 4, 4

    def bm25(tf: float, length: float, df: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))

    hits = {h.chunk.id: h.score for h in await store.search("acme", ["docs"], "gamma")}
    assert hits.keys() == {"f:1", "t:0"}
    assert hits["f:1"] == pytest.approx(bm25(2, 3, 2))
    assert hits["t:0"] == pytest.approx(bm25(2.0, 3.0, 2))
    both = {h.chunk.id: h.score for h in await store.search("acme", ["docs"], "alpha gamma")}
    assert both["f:1"] == pytest.approx(bm25(1, 3, 2) + bm25(2, 3, 2))


async def test_exact_and_budgeted_scoring_agree_on_scores(make_store: PgvectorFactory) -> None:
    """With a small match budget the gate narrows which chunks are scored, never how."""
    exact = await make_store(schema=f"{make_store.prefix}_budget", match_budget=0)  # type: ignore[attr-defined]
    texts = [f"common filler words number {i} " + ("rare" if i % 50 == 0 else "") for i in range(400)]
    await exact.replace_file("acme", "docs", "f", chunks("f", texts))
    budgeted = await make_store(schema=f"{make_store.prefix}_budget", match_budget=20)  # type: ignore[attr-defined]
    want = await exact.search("acme", ["docs"], "rare common words", k=5)
    got = await budgeted.search("acme", ["docs"], "rare common words", k=5)
    assert [(h.chunk.id, h.score) for h in got] == [(h.chunk.id, pytest.approx(h.score)) for h in want]
    assert all(h.chunk.text.endswith("rare") for h in got)


async def test_ranking_agrees_with_the_sqlite_store(store: PgvectorStore, tmp_path: Path) -> None:
    """Sanity against the built-in BM25 (FTS5): the same best chunk for unambiguous queries."""
    sqlite = load_driver("vector_stores", "sqlite", env={})  # the built-in store, as Chorus loads it
    corpus = [
        *FILLER,
        "Standard delivery to Europe takes seven business days from the Rotterdam warehouse.",
        "Express delivery to the United States takes one business day from Denver.",
        "Refunds go back to the original payment method within five days of the return.",
        "Returns are accepted within thirty days when the item is unused and in its box.",
        "Reset your password from the login page; the reset link expires after one hour.",
        "Invoices are emailed monthly and can be downloaded as PDF from the billing page.",
        "Two-factor authentication protects accounts with a code from an authenticator app.",
        "Gift cards never expire and can be combined with discount codes at checkout.",
    ]
    # (not "return policy days": with stop words left out of chunk lengths, as here, the Returns
    # chunk is the shorter of two equal matches; FTS5 counts them and prefers the Refunds chunk)
    queries = ["delivery to Europe", "express shipping united states", "refund payment method",
               "password reset link", "download invoice pdf", "two factor authentication code", "gift card expiry",
               "toner for the printer", "parking permit renewal"]
    reference = sqlite(sqlite.settings_type(), tmp_path)
    await reference.start()
    try:
        for s in (store, reference):
            await s.replace_file("acme", "docs", "kb", chunks("kb", corpus))
        for query in queries:
            want = [h.chunk.id for h in await reference.search("acme", ["docs"], query, k=3)]
            got = await ids(store, query, k=3)
            assert got[0] == want[0], (query, got, want)
    finally:
        await reference.aclose()


async def test_unstorable_characters_are_replaced_never_a_500(store: PgvectorStore) -> None:
    """PostgreSQL text holds no NUL (SQLite does): stored as U+FFFD; queries and filters with it still work."""
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "alpha\x00omega text", title="t\x00",
                                                         attributes={"k\x00": "v\x00", "lang": "en"})])
    (hit,) = await store.search("acme", ["docs"], "omega\x00 text")
    assert hit.chunk.text == "alpha\ufffdomega text" and hit.chunk.attributes == {"k\ufffd": "v\ufffd", "lang": "en"}
    assert await ids(store, "omega", filters={"type": "eq", "key": "lang", "value": "e\x00n"}) == []
    assert await ids(store, "alpha", filters={"type": "in", "key": "lang", "value": ["\ud800", "en"]}) == ["f:0"]
    assert await ids(store, "\ud800 omega") == ["f:0"]


async def test_a_huge_k_is_every_hit_once(store: PgvectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["huge k one", "huge k two"], vector=[1.0, 0.0]))
    assert len(await store.search("acme", ["docs"], "huge", vector=[1.0, 0.0], k=2**70)) == 2


# -- writes ---------------------------------------------------------------------------------------


async def test_a_failing_write_leaves_the_previous_version(store: PgvectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["original words"], vector=[1.0, 0.0]))
    bad = [chunk("f", 0, "new words"), chunk("f", 2**31, "index out of the integer range")]  # fails in the database
    with pytest.raises(Exception):  # noqa: B017 - whatever the database raises, nothing may change
        await store.replace_file("acme", "docs", "f", bad)
    assert await ids(store, "original") == ["f:0"] and await ids(store, "new") == []
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:0"]
    async with store._connection() as conn:
        assert await conn.fetchval("SELECT chunks FROM workspace_stats WHERE workspace = 'acme'") == 1


CRASH_CHILD = """
import asyncio, sys, time
from pathlib import Path
from chorus_vectorstore_pgvector import PgvectorStore, PgvectorStoreSettings
from chorus.secrets import Secret
from chorus.testing.vectorstores import chunks

async def main():
    store = PgvectorStore(PgvectorStoreSettings(url=Secret(sys.argv[1]), schema=sys.argv[2]), Path("."))
    await store.start()
    delete = store._delete
    async def delete_then_hang(*args):
        removed = await delete(*args)
        print("inside", flush=True)       # the old rows are deleted in the open transaction
        time.sleep(600)
        return removed
    store._delete = delete_then_hang
    await store.replace_file("acme", "docs", "f", chunks("f", ["partial newword7"] * 5))

asyncio.run(main())
"""


async def test_a_process_killed_mid_write_leaves_the_previous_version(make_store: PgvectorFactory,
                                                                      pgvector_url: str) -> None:
    schema = f"{make_store.prefix}_crash"  # type: ignore[attr-defined]
    s = await make_store(schema=schema)
    old = chunks("f", [f"original chunk {i}" for i in range(30)], vector=[0.0, 1.0])
    await s.replace_file("acme", "docs", "f", old)
    await kill_mid_write(CRASH_CHILD, pgvector_url, schema)
    assert await s.count("acme", "docs", "f") == 30
    assert sorted(await ids(s, "original chunk", k=100)) == sorted(c.id for c in old)
    assert await ids(s, "partial newword7") == []
    assert len(await s.search("acme", ["docs"], "", vector=[0.0, 1.0], k=100)) == 30
    await s.replace_file("acme", "docs", "f", chunks("f", ["after the crash"]))  # the workspace lock was released
    assert await ids(s, "crash") == ["f:0"]


# -- dense ----------------------------------------------------------------------------------------


async def test_dense_search_uses_the_hnsw_index_of_its_dimension(store: PgvectorStore) -> None:
    rng = random.Random(5)
    vectors = [[rng.gauss(0, 1) for _ in range(8)] for _ in range(3000)]
    for f in range(3):
        await store.replace_file("acme", "docs", f"f{f}", [chunk(f"f{f}", i, f"row {i}", vector=vectors[f * 1000 + i])
                                                           for i in range(1000)])
    await store.replace_file("acme", "docs", "g", [chunk("g", 0, "three dims", vector=[1.0, 0.0, 0.0])])
    async with store._connection() as conn:
        await conn.execute("ANALYZE chunks")
        indexes = {r[0]: r[1] for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'chunks_hnsw_%'",
            store.schema)}
        assert set(indexes) == {"chunks_hnsw_8", "chunks_hnsw_3"}
        assert "hnsw" in indexes["chunks_hnsw_8"] and "vector_cosine_ops" in indexes["chunks_hnsw_8"]
        async with conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN SELECT c.id FROM chunks AS c WHERE c.dims = 8 AND c.workspace = 'acme'"
                " AND c.dataset = ANY('{docs}'::text[]) ORDER BY c.embedding::vector(8) <=> $1::vector(8), c.id LIMIT 50",
                vectors[0]))
    assert "chunks_hnsw_8" in plan, plan
    exact = sorted(range(3000), key=lambda i: -_cosine(vectors[i], vectors[7]))[:10]
    found = await ids(store, "", vector=vectors[7], k=10)
    want = [f"f{i // 1000}:{i % 1000}" for i in exact]
    assert found[0] == "f0:7" and len(set(found) & set(want)) >= 9
    assert await ids(store, "", vector=[1.0, 0.1, 0.0]) == ["g:0"]   # each dimension ranks its own vectors


async def test_vectors_beyond_2000_dimensions_use_a_halfvec_index(store: PgvectorStore) -> None:
    dims = 2500
    rows = [[0.0] * dims for _ in range(3)]
    for i, row in enumerate(rows):
        row[i] = 1.0
        row[-1] = 0.1
    await store.replace_file("acme", "docs", "f", [chunk("f", i, f"wide {i}", vector=v) for i, v in enumerate(rows)])
    query = [0.0] * dims
    query[1] = 1.0
    hits = await store.search("acme", ["docs"], "", vector=query, k=3)
    assert hits[0].chunk.id == "f:1"
    assert hits[0].score == pytest.approx(1 / math.sqrt(1.01), abs=1e-5)
    async with store._connection() as conn:
        definition = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'chunks_hnsw_2500'"
                                         " AND schemaname = $1", store.schema)
    assert "halfvec_cosine_ops" in definition


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
