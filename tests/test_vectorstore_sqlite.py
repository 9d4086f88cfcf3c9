"""The built-in ``sqlite`` vector store: the conformance kit, plus what is particular to SQLite
(schema and WAL, the FTS5 query planner, string comparisons in filters, injected failures, a killed
writer, other processes, the dense index's caches, work kept off the event loop)."""

from __future__ import annotations

import itertools
import math
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import chorus_plugins.sqlite_store as vs
from chorus.testing.offloop import OffLoop
from chorus.testing.vectorstores import (
    CHECKS,
    FILLER,
    SCORING_CHECKS,
    Check,
    DriverFactory,
    assert_filter_selects,
    chunk,
    chunks,
    ids,
    kill_mid_write,
    load_filter_docs,
)
from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings, plan_query, query_terms


def settings(**kw: Any) -> SqliteVectorStoreSettings:
    return SqliteVectorStoreSettings(**kw)


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[DriverFactory[SqliteVectorStore]]:
    """The kit's factory: each store in its own folder of ``tmp_path`` (``data`` names a shared one)."""
    fresh = itertools.count()

    def build(*, data: str | None = None, dense: bool = True) -> SqliteVectorStore:
        return SqliteVectorStore(settings(dense=dense), tmp_path / (f"data-{data}" if data else f"fresh-{next(fresh)}"))

    async with DriverFactory(build) as make:
        yield make


@pytest.fixture
async def store(make_store: DriverFactory[SqliteVectorStore]) -> SqliteVectorStore:
    return await make_store()


@pytest.mark.parametrize("check", CHECKS + SCORING_CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: Check, make_store: DriverFactory[SqliteVectorStore]) -> None:
    await check(make_store)


# -- basics ---------------------------------------------------------------------------------------


def test_registered_as_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="chorus.vector_stores") if e.name == "sqlite"]
    assert ep.load() is SqliteVectorStore
    assert SqliteVectorStore.settings_type is SqliteVectorStoreSettings


async def test_default_path_wal_and_schema(tmp_path: Path) -> None:
    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    await s.aclose()
    path = tmp_path / "knowledge.sqlite3"
    assert path.exists()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
        assert {"workspace", "dataset", "file_id", "idx", "text", "title", "headings", "url", "source",
                "start", "end", "attributes"} <= columns
    finally:
        db.close()
    relative = SqliteVectorStore(settings(path="sub/kb.db"), tmp_path)
    assert relative.path == tmp_path / "sub" / "kb.db"


# -- tenancy of the lexical statistics ------------------------------------------------------------


async def test_bm25_statistics_are_per_workspace(store: SqliteVectorStore) -> None:
    """Another tenant's documents never move this tenant's scores (one FTS5 index per workspace)."""
    await store.replace_file("acme", "docs", "a", chunks("a", ["widget manual", "gadget manual", "gizmo manual"]))
    before = [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")]
    await store.replace_file("globex", "docs", "g",
                             chunks("g", [f"widget manual {i}" for i in range(50)], workspace="globex"))
    assert [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")] == before
    await store.delete_file("globex", "docs", "g")
    assert [(h.chunk.id, h.score) for h in await store.search("acme", ["docs"], "widget manual")] == before
    db = store._writer
    assert db is not None
    assert [w for (w,) in db.execute("SELECT workspace FROM lexical_indexes ORDER BY id")] == ["acme", "globex"]


V1_SCHEMA = """
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT NULL, dataset TEXT NOT NULL, file_id TEXT NOT NULL,
    idx INTEGER NOT NULL, chunk_id TEXT NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL, headings TEXT NOT NULL,
    url TEXT NOT NULL, source TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    attributes TEXT NOT NULL, UNIQUE (workspace, dataset, file_id, idx)
);
CREATE TABLE chunk_vectors (id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, dataset TEXT NOT NULL,
                            vector BLOB NOT NULL);
CREATE INDEX chunk_vectors_scope ON chunk_vectors (workspace, dataset);
CREATE TABLE datasets (workspace TEXT NOT NULL, dataset TEXT NOT NULL, version INTEGER NOT NULL,
                       logged_after INTEGER NOT NULL, PRIMARY KEY (workspace, dataset)) WITHOUT ROWID;
CREATE TABLE deletions (workspace TEXT NOT NULL, dataset TEXT NOT NULL, version INTEGER NOT NULL,
                        lo INTEGER NOT NULL, hi INTEGER NOT NULL,
                        PRIMARY KEY (workspace, dataset, version, lo)) WITHOUT ROWID;
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, title, headings, content='chunks', content_rowid='id', tokenize='unicode61'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, title, headings) VALUES (new.id, new.text, new.title, new.headings);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, title, headings)
        VALUES ('delete', old.id, old.text, old.title, old.headings);
    DELETE FROM chunk_vectors WHERE id = old.id;
END;
CREATE TRIGGER chunks_au BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: replace the file');
END;
PRAGMA user_version=1;
"""


async def test_a_version_1_file_is_migrated_to_an_index_per_workspace(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "knowledge.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    for n, (workspace, text) in enumerate([("acme", "running shoes guide"), ("acme", "tennis rackets"),
                                           ("globex", "running shoes for globex")]):
        db.execute('INSERT INTO chunks (workspace, dataset, file_id, idx, chunk_id, text, title, headings, url,'
                   ' source, start, "end", attributes) VALUES (?, "docs", "f", ?, ?, ?, "", "[]", "", "", 0, 0, "{}")',
                   (workspace, n, f"f:{n}", text))
    db.commit()
    db.close()
    store = SqliteVectorStore(settings(), tmp_path)  # configured "porter unicode61"; the file says "unicode61"
    await store.start()
    try:
        assert await ids(store, "running shoes") == ["f:0"]
        assert await ids(store, "running shoes", workspace="globex") == ["f:2"]
        assert await ids(store, "runs") == []  # still unicode61 (no stemming): the file's tokenizer is kept
        await store.replace_file("acme", "docs", "f", chunks("f", ["fresh text after the migration"]))
        assert await ids(store, "fresh") == ["f:0"] and await ids(store, "tennis") == []
    finally:
        await store.aclose()
    assert "use tokenizer 'unicode61'" in caplog.text
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "chunks_fts" not in tables and "chunks_ai" not in tables
        assert [w for (w,) in db.execute("SELECT workspace FROM lexical_indexes ORDER BY workspace")] == [
            "acme", "globex"]
    finally:
        db.close()


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "knowledge.sqlite3")
    db.execute("PRAGMA user_version=3")
    db.close()
    with pytest.raises(RuntimeError, match="unknown vector store schema version 3"):
        await SqliteVectorStore(settings(), tmp_path).start()


# -- lexical ranking ------------------------------------------------------------------------------


def test_query_terms() -> None:
    assert query_terms('"Foo" AND (bar* foo_baz') == ["foo", "and", "bar", "baz"]
    assert query_terms("Ünïcode café") == ["ünïcode", "café"]
    assert len(query_terms(" ".join(f"w{i}" for i in range(1000)))) == vs.MAX_QUERY_TERMS


def test_plan_query() -> None:
    df = {"rare": 10, "mid": 300, "common": 3000, "everywhere": 9000}
    assert plan_query([], df, 10_000, 100) is None
    exact = plan_query(["rare", "mid"], df, 10_000, 1000)
    assert exact is not None and exact.expressions() == ['"rare" OR "mid"']
    assert plan_query(["rare", "common"], df, 10_000, 0).expressions() == ['"rare" OR "common"']  # type: ignore[union-attr]
    # terms in half the chunks or more get FTS5's IDF floor (1e-6): dropped while another remains
    assert plan_query(["everywhere", "rare", "mid"], df, 10_000, 100_000).expressions() == ['"rare" OR "mid"']  # type: ignore[union-attr]
    assert plan_query(["everywhere"], df, 10_000, 100_000).expressions() == ['"everywhere"']  # type: ignore[union-attr]
    assert plan_query(["everywhere", "rare"], df, 10_000, 0).expressions() == ['"everywhere" OR "rare"']  # type: ignore[union-attr]
    # zero-weight terms dropped, rare ones gate, the rest only score
    plan = plan_query(["everywhere", "common", "mid", "rare"], df, 10_000, 1000)
    assert plan is not None and not plan.bounded
    assert plan.expressions() == ['("rare" OR "mid") AND ("common")', '"rare" OR "mid"']
    # nothing rare enough: the conjunction of the rarest terms, bounded
    plan = plan_query(["common", "everywhere", "mid"], df, 10_000, 100)
    assert plan is not None and plan.bounded and plan.gate == '"mid" AND "common"'
    # every term everywhere: keep the rarest
    plan = plan_query(["everywhere"], df, 10_000, 100)
    assert plan is not None and plan.gate == '"everywhere"' and plan.bounded
    # the only rarer term is in no chunk: the frequent ones are still searched (they once were not)
    assert plan_query(["absent", "everywhere"], df, 10_000, 100_000).expressions() == ['"absent" OR "everywhere"']  # type: ignore[union-attr]


SMALL_KB = {
    "hours": "Opening hours. Our support team is open Monday to Friday, 9am to 5pm. Support is closed on public holidays.",
    "returns": "Returns. You can return an order within 30 days. Support will email you a prepaid return label.",
    "shipping": "Shipping. We ship to every country in Europe. Orders leave the warehouse within two days.",
}


@pytest.mark.parametrize(("question", "answer"), [
    ("When is support open?", "hours"),
    ("How do I return my order?", "returns"),
    ("Do you ship to Europe?", "shipping"),
    ("Is support open on holidays?", "hours"),
    ("How long do I have to send an order back?", "returns"),
    ("What does support do with my order?", "returns"),   # every word in two documents, or in none
])
async def test_a_small_knowledge_base_answers_ordinary_questions(store: SqliteVectorStore, question: str,
                                                                 answer: str) -> None:
    """Three short documents: every word of a question is in one or two of them, which FTS5's BM25
    scores as worthless (an IDF of 1e-6 from half the chunks on). The small-corpus ranking still
    puts the document that answers first."""
    for name, text in SMALL_KB.items():
        await store.replace_file("acme", "docs", name, [chunk(name, 0, text, title=text.split(".")[0])])
    found = await ids(store, question, k=3)
    assert found and found[0] == f"{answer}:0", (question, found)


async def test_small_corpus_ranking_weighs_topic_words_over_function_words(store: SqliteVectorStore) -> None:
    """A chunk full of "how do I" loses to the one about the question's topic; titles count double."""
    await store.replace_file("acme", "docs", "faq", [
        chunk("faq", 0, "How do I do it? How do I know? How do I start? Do I need to? How is it done?", title="FAQ"),
        chunk("faq", 1, "Add a bot with a dataset by listing the dataset in the bot's datasets key.", title="Datasets"),
        chunk("faq", 2, "Benchmarks: bot latency, bot throughput, bot memory, bot bot bot.", title="Benchmarks"),
    ])
    assert (await ids(store, "How do I add a bot with a dataset?", k=3))[0] == "faq:1"


async def test_small_and_large_corpus_rankings_agree_on_a_clear_winner(tmp_path: Path) -> None:
    """The same store, the same chunks: the two rankings differ in scale, not in what clearly answers."""
    texts = [f"filler words number {i} about nothing in particular" for i in range(50)]
    texts[17] = "the refund window is thirty days for every order"
    small = SqliteVectorStore(settings(), tmp_path)
    large = SqliteVectorStore(settings(small_corpus_chunks=0), tmp_path)
    await small.start()
    await large.start()
    try:
        await small.replace_file("acme", "docs", "f", chunks("f", texts))
        for store in (small, large):
            assert (await ids(store, "refund window", k=3))[0] == "f:17"
            assert await ids(store, "nothing here matches zzz", k=3) != []
            assert await ids(store, "zzz qqq", k=3) == []
    finally:
        await small.aclose()
        await large.aclose()


async def test_budgeted_plan_scores_gated_chunks_exactly(tmp_path: Path) -> None:
    """Past the budget only chunks holding the rarest terms are scored, but with their exact BM25."""
    words = [f"w{i}" for i in range(60)]
    texts = [" ".join(words[(i * 7 + j * j) % 60] for j in range(30)) + f" marker{i % 40}" for i in range(400)]
    # small_corpus_chunks=0: the planner of large workspaces, even on these 400 chunks
    planned = SqliteVectorStore(settings(match_budget=60, small_corpus_chunks=0), tmp_path)
    exact = SqliteVectorStore(settings(match_budget=0, small_corpus_chunks=0), tmp_path)
    await planned.start()
    await exact.start()
    try:
        for f in range(4):
            await planned.replace_file("acme", "docs", f"f{f}", chunks(f"f{f}", texts[f * 100:(f + 1) * 100]))
        for query in ["marker7 w3 w11", "marker13 w5", "w1 w2 w3 w4", "marker39"]:
            got = await planned.search("acme", ["docs"], query, k=5)
            want = {h.chunk.id: h.score for h in await exact.search("acme", ["docs"], query, k=400)}
            assert got, query
            for hit in got:
                assert hit.score == pytest.approx(want[hit.chunk.id], rel=1e-3), query
            if "marker" in query:
                assert all(query.split()[0] in hit.chunk.text.split() for hit in got)
    finally:
        await planned.aclose()
        await exact.aclose()


# -- filters --------------------------------------------------------------------------------------


async def test_range_filters_compare_strings(store: SqliteVectorStore) -> None:
    """SQLite orders strings too (Qdrant refuses a string bound): ``"unknown" > "a"``."""
    await load_filter_docs(store)
    await assert_filter_selects(store, {"type": "gt", "key": "year", "value": "a"}, {"fr-none"})


# -- atomicity ------------------------------------------------------------------------------------


async def test_failed_replace_keeps_previous_chunks(store: SqliteVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["old alpha", "old beta"], vector=[1.0, 0.0]))
    # a constraint violation mid-insert: two chunks with the same index
    clash = [chunk("f", 0, "new gamma"), chunk("f", 1, "new delta"), chunk("f", 1, "new epsilon")]
    with pytest.raises(sqlite3.IntegrityError):
        await store.replace_file("acme", "docs", "f", clash)
    # a failure after the rows went in: packing the vectors
    def boom(vector: Any) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(vs.driver, "_pack", boom)
    with pytest.raises(RuntimeError):
        await store.replace_file("acme", "docs", "f", chunks("f", ["new zeta"], vector=[1.0, 0.0]))
    monkeypatch.undo()
    assert sorted(await ids(store, "old")) == ["f:0", "f:1"]
    assert await ids(store, "new gamma delta epsilon zeta") == []
    assert sorted(await ids(store, "", vector=[1.0, 0.0])) == ["f:0", "f:1"]
    assert await store.count("acme", "docs", "f") == 2
    # the writer connection is usable afterwards
    await store.replace_file("acme", "docs", "f", chunks("f", ["fresh text"]))
    assert await ids(store, "fresh") == ["f:0"]


CRASH_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from chorus.contract.documents import Chunk
    from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings

    store = SqliteVectorStore(SqliteVectorStoreSettings(readers=1), Path(sys.argv[1]))
    store.open()
    db = store._writer
    chunks = [Chunk(id=f"f:{i}", workspace="acme", dataset="docs", file_id="f", index=i,
                    text=f"partial newword{i} filler text", vector=[1.0, 0.5]) for i in range(20000)]
    base = db.total_changes

    def progress():
        if db.total_changes - base > 5000:   # old rows deleted and thousands of new ones inserted
            print("inside", flush=True)
            time.sleep(60)                    # hold the transaction open until we are killed
        return 0

    db.set_progress_handler(progress, 1000)
    store.replace_file_sync(db, "acme", "docs", "f", chunks)
    print("committed", flush=True)
""")


async def test_crash_mid_replace_keeps_previous_chunks(tmp_path: Path) -> None:
    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    old = chunks("f", [f"original chunk number {i}" for i in range(300)], vector=[0.0, 1.0])
    await s.replace_file("acme", "docs", "f", old)
    await s.aclose()

    await kill_mid_write(CRASH_CHILD, str(tmp_path))

    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    try:
        assert await s.count("acme", "docs", "f") == 300
        hits = await s.search("acme", ["docs"], "original chunk", k=500)
        assert sorted(h.chunk.id for h in hits) == sorted(c.id for c in old)
        assert await ids(s, "partial newword7") == []
        assert len(await s.search("acme", ["docs"], "", vector=[0.0, 1.0], k=500)) == 300
    finally:
        await s.aclose()
    db = sqlite3.connect(tmp_path / "knowledge.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for (index_id,) in db.execute("SELECT id FROM lexical_indexes").fetchall():  # each workspace's index
            db.execute(f"INSERT INTO chunks_fts_{index_id} (chunks_fts_{index_id}, rank) VALUES ('integrity-check', 1)")
        assert db.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0] == 300
    finally:
        db.close()


# -- concurrency and the dense index ---------------------------------------------------------------


async def test_writes_and_searches_run_off_the_event_loop(store: SqliteVectorStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    probe = OffLoop()
    monkeypatch.setattr(store, "replace_file_sync", probe.wrap(store.replace_file_sync))
    monkeypatch.setattr(store, "_search", probe.wrap(store._search))
    big = [chunk("big", i, f"bulk text number {i} " + " ".join(FILLER), vector=[1.0, i / 500]) for i in range(500)]
    await store.replace_file("acme", "docs", "big", big)
    hits = await store.search("acme", ["docs"], "bulk text", vector=[1.0, 0.0])
    assert hits and probe.calls >= 2 and not probe.failures


async def test_dense_index_matches_brute_force_through_many_writes(store: SqliteVectorStore) -> None:
    """Incremental refreshes (appends, masked deletions, merges) always equal a full recomputation."""
    import random

    rng = random.Random(5)
    live: dict[str, list[float]] = {}
    for step in range(60):
        file_id = f"f{rng.randrange(12)}"
        if rng.random() < 0.2:
            await store.delete_file("acme", "docs", file_id)
            live = {cid: v for cid, v in live.items() if not cid.startswith(file_id + ":")}
        else:
            vectors = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(rng.randrange(0, 6))]
            await store.replace_file("acme", "docs", file_id, [chunk(file_id, i, f"t{step}", vector=v)
                                                                for i, v in enumerate(vectors)])
            live = {cid: v for cid, v in live.items() if not cid.startswith(file_id + ":")}
            live.update({f"{file_id}:{i}": v for i, v in enumerate(vectors)})
        if step % 3 == 0:
            query = [rng.uniform(-1, 1) for _ in range(3)]
            hits = await store.search("acme", ["docs"], "", vector=query, k=1000)

            def cosine(v: list[float], q: list[float] = query) -> float:
                dot = sum(a * b for a, b in zip(v, q, strict=True))
                return dot / ((math.sqrt(sum(a * a for a in v)) or 1.0) * math.sqrt(sum(b * b for b in q)))

            assert {h.chunk.id for h in hits} == set(live)
            for hit in hits:
                assert hit.score == pytest.approx(cosine(live[hit.chunk.id]), abs=1e-5)
    await store.delete_dataset("acme", "docs")
    assert await store.search("acme", ["docs"], "", vector=[1.0, 0.0, 0.0]) == []


async def test_sees_writes_of_another_process(tmp_path: Path) -> None:
    first, second = SqliteVectorStore(settings(), tmp_path), SqliteVectorStore(settings(), tmp_path)
    await first.start()
    await second.start()
    try:
        await first.replace_file("acme", "docs", "f", [chunk("f", 0, "apple", vector=[1.0, 0.0])])
        assert await ids(second, "apple", vector=[1.0, 0.0]) == ["f:0"]
        await first.replace_file("acme", "docs", "f", [chunk("f", 0, "banana", vector=[0.0, 1.0])])
        hits = await second.search("acme", ["docs"], "", vector=[0.0, 1.0])
        assert [h.chunk.text for h in hits] == ["banana"] and hits[0].score == pytest.approx(1.0)
        await first.delete_dataset("acme", "docs")
        assert await ids(second, "banana", vector=[0.0, 1.0]) == []
    finally:
        await first.aclose()
        await second.aclose()


async def test_dense_refresh_after_the_deletion_log_moved_on(store: SqliteVectorStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vs.driver, "DELETION_LOG", 4)
    await store.replace_file("acme", "docs", "keep", [chunk("keep", 0, "k", vector=[0.0, 1.0])])
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "v0", vector=[1.0, 0.0])])
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:0", "keep:0"]   # cached at an early version
    for n in range(1, 70):
        await store.replace_file("acme", "docs", "f", [chunk("f", 0, f"v{n}", vector=[1.0, n / 100])])
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("SELECT logged_after FROM datasets").fetchone()[0] > 2
        assert db.execute("SELECT count(*) FROM deletions").fetchone()[0] < 70
    finally:
        db.close()
    hits = await store.search("acme", ["docs"], "", vector=[1.0, 0.0], k=10)
    assert [h.chunk.text for h in hits] == ["v69", "k"]


async def test_dense_segments_stay_few_and_correct(store: SqliteVectorStore) -> None:
    for n in range(30):
        await store.replace_file("acme", "docs", f"f{n}", [chunk(f"f{n}", 0, "x", vector=[1.0, n / 30])])
        await store.search("acme", ["docs"], "", vector=[1.0, 0.0])   # refresh after every write
    (entry,) = store._dense._entries.values()
    assert len(entry.groups[2]) <= vs.MAX_SEGMENTS
    hits = await store.search("acme", ["docs"], "", vector=[0.0, 1.0], k=30)
    assert [h.chunk.file_id for h in hits] == [f"f{n}" for n in reversed(range(30))]
