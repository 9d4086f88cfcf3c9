"""The built-in ``sqlite`` vector store: storage, ranking, tenancy, filters, atomicity, concurrency."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from chorus.errors import InvalidRequest
from chorus.knowledge.model import Chunk
from chorus.testing.offloop import OffLoop

import chorus_plugins.sqlite_store as vs
from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings, plan_query, query_terms

FILLER = [
    "The quarterly report covers revenue and staffing in the northern offices.",
    "Our cafeteria menu changes every Monday with seasonal vegetables.",
    "Parking permits are renewed at the front desk before the end of March.",
    "The printer on the third floor needs toner and a new paper tray.",
    "Holiday schedules are published in the shared calendar each autumn.",
    "Security badges must be worn visibly inside the building at all times.",
]


def chunk(file_id: str, index: int, text: str, *, workspace: str = "acme", dataset: str = "docs",
          vector: list[float] | None = None, **extra: Any) -> Chunk:
    return Chunk(id=f"{file_id}:{index}", workspace=workspace, dataset=dataset, file_id=file_id, index=index,
                 text=text, vector=vector, **extra)


def chunks(file_id: str, texts: list[str], **kw: Any) -> list[Chunk]:
    return [chunk(file_id, i, t, **kw) for i, t in enumerate(texts)]


def settings(**kw: Any) -> SqliteVectorStoreSettings:
    return SqliteVectorStoreSettings(**kw)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteVectorStore]:
    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


async def ids(s: SqliteVectorStore, query: str, *, workspace: str = "acme", datasets: list[str] | None = None,
              **kw: Any) -> list[str]:
    return [h.chunk.id for h in await s.search(workspace, datasets or ["docs"], query, **kw)]


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


async def test_not_started_raises(tmp_path: Path) -> None:
    s = SqliteVectorStore(settings(), tmp_path)
    with pytest.raises(RuntimeError):
        await s.count("acme", "docs")


async def test_replace_delete_count(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["alpha one", "alpha two", "alpha three"]))
    await store.replace_file("acme", "docs", "f2", chunks("f2", ["beta one"]))
    assert await store.count("acme", "docs") == 4
    assert await store.count("acme", "docs", "f1") == 3
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["gamma one", "gamma two"]))
    assert await store.count("acme", "docs", "f1") == 2
    assert await ids(store, "alpha") == []
    assert sorted(await ids(store, "gamma")) == ["f1:0", "f1:1"]
    await store.replace_file("acme", "docs", "f1", [])
    assert await store.count("acme", "docs", "f1") == 0
    assert await store.delete_file("acme", "docs", "f2") == 1
    assert await store.delete_file("acme", "docs", "f2") == 0
    await store.replace_file("acme", "docs", "f3", chunks("f3", ["delta", "delta"]))
    assert await store.delete_dataset("acme", "docs") == 2
    assert await store.count("acme", "docs") == 0
    assert await ids(store, "delta") == []


async def test_chunk_fields_round_trip(store: SqliteVectorStore) -> None:
    original = chunk("f1", 0, "Install on Linux with apt.", title="Guide", headings=["Install", "Linux — Debian"],
                     url="https://example.com/guide", source="docs/guide.md", start=10, end=36,
                     attributes={"lang": "en", "year": 2024, "draft": False})
    await store.replace_file("acme", "docs", "f1", [original])
    (hit,) = await store.search("acme", ["docs"], "install linux")
    assert hit.chunk == original
    assert hit.score > 0
    # headings and title are searchable too
    assert await ids(store, "debian") == ["f1:0"]
    assert await ids(store, "guide") == ["f1:0"]


async def test_persists_across_restart(tmp_path: Path) -> None:
    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    await s.replace_file("acme", "docs", "f1", chunks("f1", ["persistent zebra"], vector=[1.0, 0.0]))
    await s.aclose()
    s = SqliteVectorStore(settings(), tmp_path)
    await s.start()
    try:
        assert await ids(s, "zebra") == ["f1:0"]
        assert await ids(s, "", vector=[1.0, 0.1]) == ["f1:0"]
    finally:
        await s.aclose()


async def test_rejects_chunks_of_another_file(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["original text"]))
    for bad in (chunk("f2", 0, "x"), chunk("f1", 0, "x", workspace="globex"), chunk("f1", 0, "x", dataset="other")):
        with pytest.raises(ValueError):
            await store.replace_file("acme", "docs", "f1", [bad])
    assert await ids(store, "original") == ["f1:0"]


# -- lexical ranking ------------------------------------------------------------------------------


async def test_bm25_ranks_matching_and_term_rich_chunks_first(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await store.replace_file("acme", "docs", "guide", chunks("guide", [
        "Kubernetes is mentioned once here among many other words about unrelated office topics today.",
        "Kubernetes clusters: deploy Kubernetes pods, scale Kubernetes nodes, upgrade Kubernetes.",
        "Rotate the database credentials every ninety days using the vault.",
    ]))
    assert (await ids(store, "kubernetes"))[:2] == ["guide:1", "guide:0"]
    assert (await ids(store, "how do I rotate database credentials?"))[0] == "guide:2"
    # more matching terms beat fewer
    assert (await ids(store, "vault credentials printer"))[0] == "guide:2"
    # stemming: a different inflection still matches
    assert (await ids(store, "rotating credential"))[0] == "guide:2"
    hits = await store.search("acme", ["docs"], "kubernetes")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_title_and_headings_are_weighted(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await store.replace_file("acme", "docs", "a", [chunk("a", 0, "Some text that mentions backups in passing, once.")])
    await store.replace_file("acme", "docs", "b", [chunk("b", 0, "Some text about the schedule and retention.",
                                                          title="Backups", headings=["Backups"])])
    assert (await ids(store, "backups"))[0] == "b:0"


@pytest.mark.parametrize("query", [
    '"foo" AND (bar', "*", "foo*", "NEAR(foo bar", "-foo", "^foo", "title:foo", "'", '"', "()", "AND OR NOT",
    "foo\x00bar", "{title text}: foo", "foo + bar", "ｆｏｏ", "日本語のテキスト", "a" * 5000, " ".join(["foo"] * 500),
    "", "   ", "!!!", "_", "foo_bar",
])
async def test_weird_queries_never_raise(store: SqliteVectorStore, query: str) -> None:
    texts = ["foo and bar live here", "日本語のテキスト", "AND OR NOT"]
    await store.replace_file("acme", "docs", "f", chunks("f", texts))
    hits = await store.search("acme", ["docs"], query)
    if "foo" in query.lower():
        assert hits and hits[0].chunk.id == "f:0"


async def test_operator_words_are_plain_terms(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["foo bar", "and or not near", "unrelated"]))
    assert (await ids(store, '"foo" AND (bar'))[0] == "f:0"
    assert await ids(store, "NOT near") == ["f:1"]


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


async def test_budgeted_plan_scores_gated_chunks_exactly(tmp_path: Path) -> None:
    """Past the budget only chunks holding the rarest terms are scored, but with their exact BM25."""
    words = [f"w{i}" for i in range(60)]
    texts = [" ".join(words[(i * 7 + j * j) % 60] for j in range(30)) + f" marker{i % 40}" for i in range(400)]
    planned = SqliteVectorStore(settings(match_budget=60), tmp_path)
    exact = SqliteVectorStore(settings(match_budget=0), tmp_path)
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


# -- tenancy and scoping --------------------------------------------------------------------------


async def test_workspaces_never_see_each_other(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["acme secret roadmap"], vector=[1.0, 0.0]))
    await store.replace_file("globex", "docs", "f1", chunks("f1", ["globex public roadmap"], workspace="globex",
                                                          vector=[0.0, 1.0]))
    for workspace, other in (("acme", "globex"), ("globex", "acme")):
        hits = await store.search(workspace, ["docs"], "secret public roadmap", vector=[0.7, 0.7], k=10)
        assert hits and {h.chunk.workspace for h in hits} == {workspace}
        assert all(other not in h.chunk.text for h in hits)
        hits = await store.search(workspace, ["docs"], "", vector=[1.0, 1.0], k=10)
        assert len(hits) == 1 and hits[0].chunk.workspace == workspace
        hits = await store.search(workspace, ["docs"], "roadmap", filters={"type": "ne", "key": "x", "value": 1})
        assert len(hits) == 1 and hits[0].chunk.workspace == workspace
    assert await ids(store, "secret", workspace="globex") == []
    assert await store.count("globex", "docs") == 1
    assert await store.delete_dataset("globex", "docs") == 1
    assert await store.delete_file("globex", "docs", "f1") == 0
    assert await store.count("acme", "docs") == 1
    assert await ids(store, "roadmap") == ["f1:0"]
    assert await store.search("nobody", ["docs"], "roadmap", vector=[1.0, 0.0]) == []


async def test_dataset_scoping(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "a", "f1", chunks("f1", ["shared topic apples"], dataset="a", vector=[1.0, 0.0]))
    await store.replace_file("acme", "b", "f1", chunks("f1", ["shared topic pears"], dataset="b", vector=[0.9, 0.1]))
    assert [h.chunk.dataset for h in await store.search("acme", ["a"], "shared topic")] == ["a"]
    assert [h.chunk.dataset for h in await store.search("acme", ["b"], "", vector=[1.0, 0.0])] == ["b"]
    both = await store.search("acme", ["a", "b", "a"], "shared topic", vector=[1.0, 0.0])
    assert sorted(h.chunk.dataset for h in both) == ["a", "b"]
    assert await store.search("acme", [], "shared") == []
    assert await store.search("acme", ["c"], "shared") == []
    assert await store.delete_dataset("acme", "a") == 1
    assert [h.chunk.dataset for h in await store.search("acme", ["a", "b"], "shared", vector=[1.0, 0.0])] == ["b"]


# -- filters --------------------------------------------------------------------------------------

DOCS = [
    ("en-2020", {"lang": "en", "year": 2020, "score": 1.5, "public": True}),
    ("en-2024", {"lang": "en", "year": 2024, "score": 3.0, "public": False}),
    ("de-2022", {"lang": "de", "year": 2022, "score": 2.0}),
    ("fr-none", {"lang": "fr", "year": "unknown"}),
    ("bare", {}),
]


@pytest.fixture
async def filtered(store: SqliteVectorStore) -> SqliteVectorStore:
    for n, (name, attrs) in enumerate(DOCS):
        await store.replace_file("acme", "docs", name, [chunk(name, 0, f"common policy text {name}", attributes=attrs,
                                                              vector=[1.0, n / 10])])
    return store


@pytest.mark.parametrize(("spec", "expected"), [
    ({"type": "eq", "key": "lang", "value": "en"}, {"en-2020", "en-2024"}),
    ({"type": "ne", "key": "lang", "value": "en"}, {"de-2022", "fr-none", "bare"}),
    ({"type": "gt", "key": "year", "value": 2020}, {"en-2024", "de-2022"}),
    ({"type": "gte", "key": "year", "value": 2020}, {"en-2020", "en-2024", "de-2022"}),
    ({"type": "lt", "key": "year", "value": 2024}, {"en-2020", "de-2022"}),
    ({"type": "lte", "key": "score", "value": 2}, {"en-2020", "de-2022"}),
    ({"type": "gt", "key": "year", "value": "a"}, {"fr-none"}),
    ({"type": "eq", "key": "public", "value": True}, {"en-2020"}),
    ({"type": "eq", "key": "public", "value": False}, {"en-2024"}),
    ({"type": "in", "key": "lang", "value": ["de", "fr"]}, {"de-2022", "fr-none"}),
    ({"type": "nin", "key": "lang", "value": ["de", "fr"]}, {"en-2020", "en-2024", "bare"}),
    ({"type": "in", "key": "lang", "value": []}, set()),
    ({"type": "nin", "key": "lang", "value": []}, {name for name, _ in DOCS}),
    ({"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                 {"type": "gte", "key": "year", "value": 2021}]}, {"en-2024"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "lang", "value": "de"},
                                {"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                                            {"type": "lt", "key": "year", "value": 2021}]}]},
     {"de-2022", "en-2020"}),
    ({"type": "eq", "key": "lang", "value": "en' OR 1=1 --"}, set()),
    ({"type": "eq", "key": "la'ng) OR 1=1 --", "value": "en"}, set()),
    ({"type": "eq", "key": "missing", "value": "x"}, set()),
])
async def test_filters(filtered: SqliteVectorStore, spec: dict[str, Any], expected: set[str]) -> None:
    lexical = await filtered.search("acme", ["docs"], "policy", k=10, filters=spec)
    assert {h.chunk.file_id for h in lexical} == expected
    dense = await filtered.search("acme", ["docs"], "", vector=[1.0, 0.0], k=10, filters=spec)
    assert {h.chunk.file_id for h in dense} == expected
    hybrid = await filtered.search("acme", ["docs"], "policy", vector=[1.0, 0.0], k=10, filters=spec)
    assert {h.chunk.file_id for h in hybrid} == expected


@pytest.mark.parametrize("spec", [
    {"type": "like", "key": "a", "value": 1},
    {"type": "eq", "key": "a"},
    {"type": "eq", "key": "", "value": 1},
    {"type": "eq", "key": 'a"b', "value": 1},
    {"type": "eq", "key": "a\\b", "value": 1},
    {"type": "eq", "key": "k" * 65, "value": 1},
    {"type": "eq", "key": "a", "value": {"x": 1}},
    {"type": "eq", "key": "a", "value": None},
    {"type": "eq", "key": "a", "value": float("nan")},
    {"type": "in", "key": "a", "value": "notalist"},
    {"type": "in", "key": "a", "value": [[1]]},
    {"type": "in", "key": "a", "value": list(range(1000))},
    {"type": "and", "filters": []},
    {"type": "or"},
    {"type": "eq", "key": "a", "value": 1, "extra": 2},
    ["not", "an", "object"],
    {"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [
        {"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [
            {"type": "and", "filters": [{"type": "eq", "key": "a", "value": 1}]}]}]}]}]}]}]}]}]},
])
async def test_invalid_filters(filtered: SqliteVectorStore, spec: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        await filtered.search("acme", ["docs"], "policy", filters=spec)
    assert info.value.status_code == 400 and info.value.param == "filters"


async def test_selective_filter_on_dense_widens_its_window(store: SqliteVectorStore) -> None:
    many = [chunk("f", i, f"row {i}", vector=[1.0, i / 1000], attributes={"keep": i == 250}) for i in range(300)]
    await store.replace_file("acme", "docs", "f", many)
    hits = await store.search("acme", ["docs"], "", vector=[1.0, 0.0], k=3,
                              filters={"type": "eq", "key": "keep", "value": True})
    assert [h.chunk.id for h in hits] == ["f:250"]


# -- dense and hybrid -----------------------------------------------------------------------------


async def test_hybrid_fuses_rankings(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER, vector=[0.0, 0.0, 1.0]))
    await store.replace_file("acme", "docs", "f", [
        chunk("f", 0, "Refund policy for damaged anvils", vector=[0.0, 1.0, 0.0]),        # lexical only
        chunk("f", 1, "Returning broken goods", vector=[1.0, 0.05, 0.0]),                  # dense only
        chunk("f", 2, "Refund policy for broken goods and anvils", vector=[0.9, 0.1, 0.0]),  # both
    ])
    query, vector = "refund policy anvils", [1.0, 0.0, 0.0]
    lexical = await ids(store, query)
    dense = await ids(store, "", vector=vector)
    assert lexical[0] in ("f:0", "f:2") and "f:1" not in lexical
    assert dense[:2] == ["f:1", "f:2"]
    hits = await store.search("acme", ["docs"], query, vector=vector, k=3)
    assert hits[0].chunk.id == "f:2"
    assert {h.chunk.id for h in hits} == {"f:0", "f:1", "f:2"}
    rrf = store.settings.rrf_k
    top = hits[0].score
    assert top == pytest.approx(1 / (rrf + lexical.index("f:2") + 1) + 1 / (rrf + 2))
    # dense-only scores are cosine similarities
    (best,) = await store.search("acme", ["docs"], "", vector=[2.0, 0.1, 0.0], k=1)
    assert best.chunk.id == "f:1" and best.score == pytest.approx(1.0, abs=1e-3)


async def test_vector_edge_cases(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "lexical words", vector=[1.0, 0.0]),
                                                   chunk("f", 1, "no vector here words")])
    # a query vector of another dimension, zero or non-finite: lexical only
    for vector in ([1.0, 0.0, 0.0], [0.0, 0.0], [float("nan"), 1.0]):
        assert sorted(await ids(store, "words", vector=vector)) == ["f:0", "f:1"]
        assert await ids(store, "", vector=vector) == []
    assert await ids(store, "", vector=[0.5, 0.5]) == ["f:0"]


async def test_dense_disabled_stores_no_vectors(tmp_path: Path) -> None:
    s = SqliteVectorStore(settings(dense=False), tmp_path)
    await s.start()
    try:
        await s.replace_file("acme", "docs", "f", [chunk("f", 0, "text", vector=[1.0, 0.0])])
        assert await ids(s, "", vector=[1.0, 0.0]) == []
        assert await ids(s, "text", vector=[1.0, 0.0]) == ["f:0"]
    finally:
        await s.aclose()


async def test_dense_index_follows_writes(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[1.0, 0.0])])
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:0"]
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[0.0, 1.0]),
                                                   chunk("f", 1, "b", vector=[1.0, 0.0])])
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:1", "f:0"]
    await store.delete_file("acme", "docs", "f")
    assert await ids(store, "", vector=[1.0, 0.0]) == []


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
    from chorus.knowledge.model import Chunk
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

    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == "inside"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

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
        db.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
        assert db.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0] == 300
    finally:
        db.close()


# -- concurrency ----------------------------------------------------------------------------------


async def test_searches_while_writing_see_whole_files(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))

    def version(n: int) -> list[Chunk]:
        return [chunk("f", i, f"versioned content part {i}", attributes={"v": n}, vector=[1.0, i / 50])
                for i in range(40 + n % 3)]

    await store.replace_file("acme", "docs", "f", version(0))
    done = False
    seen: set[int] = set()

    async def writer() -> None:
        nonlocal done
        for n in range(1, 30):
            await store.replace_file("acme", "docs", "f", version(n))
        done = True

    async def reader() -> None:
        while not done:
            hits = await store.search("acme", ["docs"], "versioned content", k=100)
            versions = {h.chunk.attributes["v"] for h in hits}
            assert len(versions) == 1, versions
            assert len(hits) == 40 + versions.pop() % 3
            seen.update(h.chunk.attributes["v"] for h in hits)
            hybrid = await store.search("acme", ["docs"], "versioned", vector=[1.0, 0.0], k=5)
            assert hybrid

    await asyncio.gather(writer(), reader(), reader())
    assert len(seen) > 1
    assert {h.chunk.attributes["v"] for h in await store.search("acme", ["docs"], "versioned", k=50)} == {29}


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


async def test_large_k(store: SqliteVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", i, f"word{i} common", vector=[1.0, i / 1200])
                                                   for i in range(1200)])
    hits = await store.search("acme", ["docs"], "common", vector=[1.0, 0.0], k=100_000)
    assert len(hits) == 1200 and len({h.chunk.id for h in hits}) == 1200
    assert await store.search("acme", ["docs"], "common", k=0) == []
