"""The ``qdrant`` driver on embedded local mode: storage, ranking, tenancy, filters, hybrid search."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed")
pytest.importorskip("chorus_vectorstore_qdrant", reason="chorus-vectorstore-qdrant is not installed")

from qdrant_testing import FILLER, StoreFactory, chunk, chunks, ids, raw_chunks, settings

from chorus.errors import ConfigError, InvalidRequest
from chorus.testing.offloop import OffLoop
from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings

# -- basics ---------------------------------------------------------------------------------------


def test_registered_as_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="chorus.vector_stores") if e.name == "qdrant"]
    assert ep.load() is QdrantVectorStore
    assert QdrantVectorStore.settings_type is QdrantVectorStoreSettings


@pytest.mark.parametrize("raw", [
    {"url": "http://q:6333", "path": "x"},
    {"path": "x", "location": ":memory:"},
    {"location": "http://q:6333"},
    {"api_key": "k"},
    {"url": "ftp://q"},
    {"collection": "bad name"},
    {"stemmer": "klingon"},
    {"bm25_b": 2.0},
    {"rrf_k": -1},
    {"batch_size": 0},
    {"unknown_key": 1},
])
def test_invalid_settings(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings(**raw)


def test_api_key_is_a_secret() -> None:
    s = settings(url="https://q.example:6333", api_key="qd-secret-value")
    assert s.api_key is not None and s.api_key.get() == "qd-secret-value"
    assert "qd-secret-value" not in repr(s)


async def test_default_and_relative_paths(tmp_path: Path) -> None:
    default = QdrantVectorStore(settings(), tmp_path)
    assert default.path == tmp_path / "qdrant"
    await default.start()
    await default.replace_file("acme", "docs", "f1", chunks("f1", ["stored on disk"]))
    await default.aclose()
    assert (tmp_path / "qdrant").is_dir()
    assert QdrantVectorStore(settings(path="sub/q"), tmp_path).path == tmp_path / "sub" / "q"
    assert QdrantVectorStore(settings(location=":memory:"), tmp_path).path is None


async def test_not_started_raises(tmp_path: Path) -> None:
    s = QdrantVectorStore(settings(location=":memory:"), tmp_path)
    with pytest.raises(RuntimeError):
        await s.count("acme", "docs")
    with pytest.raises(RuntimeError):
        await s.search("acme", ["docs"], "anything")


async def test_empty_store_answers_before_any_write(store: QdrantVectorStore) -> None:
    assert await store.count("acme", "docs") == 0
    assert await ids(store, "anything", vector=[1.0, 0.0]) == []
    assert await store.delete_file("acme", "docs", "f") == 0
    assert await store.delete_dataset("acme", "docs") == 0


async def test_replace_delete_count(store: QdrantVectorStore) -> None:
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
    assert await ids(store, "beta") == []
    await store.replace_file("acme", "docs", "f2", chunks("f2", ["beta again"]))  # after a tombstone
    assert await ids(store, "beta") == ["f2:0"]
    await store.replace_file("acme", "docs", "f3", chunks("f3", ["delta", "delta"]))
    assert await store.delete_dataset("acme", "docs") == 3
    assert await store.count("acme", "docs") == 0
    assert await ids(store, "delta beta") == []
    assert await raw_chunks(store) == []


async def test_chunk_fields_round_trip(store: QdrantVectorStore) -> None:
    original = chunk("f1", 0, "Install on Linux with apt.", title="Guide", headings=["Install", "Linux — Debian"],
                     url="https://example.com/guide", source="docs/guide.md", start=10, end=36,
                     attributes={"lang": "en", "year": 2024, "draft": False, "score": 1.5})
    await store.replace_file("acme", "docs", "f1", [original])
    (hit,) = await store.search("acme", ["docs"], "install linux")
    assert hit.chunk == original
    assert hit.score > 0
    # headings and title are searchable too
    assert await ids(store, "debian") == ["f1:0"]
    assert await ids(store, "guide") == ["f1:0"]


async def test_persists_across_restart(make_store: StoreFactory, tmp_path: Path) -> None:
    s = await make_store(path="kb")
    await s.replace_file("acme", "docs", "f1", chunks("f1", ["persistent zebra"], vector=[1.0, 0.0]))
    await s.aclose()
    s = await make_store(path="kb")
    assert await ids(s, "zebra") == ["f1:0"]
    assert await ids(s, "", vector=[1.0, 0.1]) == ["f1:0"]
    assert await s.count("acme", "docs") == 1


async def test_rejects_bad_chunk_sets(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["original text"]))
    for bad in ([chunk("f2", 0, "x")], [chunk("f1", 0, "x", workspace="globex")],
                [chunk("f1", 0, "x", dataset="other")],
                [chunk("f1", 0, "x"), chunk("f1", 0, "y")],
                [chunk("f1", 0, "x", vector=[1.0, 0.0]), chunk("f1", 1, "y", vector=[1.0, 0.0, 0.0])]):
        with pytest.raises(ValueError):
            await store.replace_file("acme", "docs", "f1", bad)
    assert await ids(store, "original") == ["f1:0"]


async def test_analyzer_change_is_refused(make_store: StoreFactory) -> None:
    s = await make_store(path="kb")
    await s.replace_file("acme", "docs", "f1", chunks("f1", ["running"]))
    await s.aclose()
    with pytest.raises(ConfigError, match="stemmer"):
        await make_store(path="kb", stemmer="")
    s = await make_store(path="kb")
    assert await ids(s, "runs") == ["f1:0"]


# -- lexical ranking ------------------------------------------------------------------------------


async def test_bm25_ranks_matching_and_term_rich_chunks_first(store: QdrantVectorStore) -> None:
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


async def test_rare_terms_outweigh_common_ones(store: QdrantVectorStore) -> None:
    common = [f"the report mentions the budget in section {i}" for i in range(12)]
    await store.replace_file("acme", "docs", "common", chunks("common", common))
    await store.replace_file("acme", "docs", "rare", chunks("rare", ["the zeppelin hangar report"]))
    # "report" is in every chunk, "zeppelin" in one: IDF makes the rare match win
    assert (await ids(store, "report zeppelin"))[0] == "rare:0"
    assert (await ids(store, "budget report"))[0].startswith("common:")


async def test_title_and_headings_are_weighted(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await store.replace_file("acme", "docs", "a", [chunk("a", 0, "Some text that mentions backups in passing, once.")])
    await store.replace_file("acme", "docs", "b", [chunk("b", 0, "Some text about the schedule and retention.",
                                                          title="Backups", headings=["Backups"])])
    assert (await ids(store, "backups"))[0] == "b:0"


async def test_case_diacritics_and_inflections_fold(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", chunks("f", ["Crème brûlée at the Café", "Deploying services"]))
    assert await ids(store, "CREME BRULEE cafe") == ["f:0"]
    assert await ids(store, "deployed service") == ["f:1"]


async def test_ranking_agrees_with_the_sqlite_store(store: QdrantVectorStore, tmp_path: Path) -> None:
    """Sanity against the built-in BM25 (FTS5): the same best chunk for unambiguous queries."""
    from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings

    corpus = FILLER + [
        "Standard delivery to Europe takes seven business days from the Rotterdam warehouse.",
        "Express delivery to the United States takes one business day from Denver.",
        "Refunds go back to the original payment method within five days of the return.",
        "Returns are accepted within thirty days when the item is unused and in its box.",
        "Reset your password from the login page; the reset link expires after one hour.",
        "Invoices are emailed monthly and can be downloaded as PDF from the billing page.",
        "Two-factor authentication protects accounts with a code from an authenticator app.",
        "Gift cards never expire and can be combined with discount codes at checkout.",
    ]
    queries = ["delivery to Europe", "express shipping united states", "refund payment method", "return policy days",
               "password reset link", "download invoice pdf", "two factor authentication code", "gift card expiry",
               "toner for the printer", "parking permit renewal"]
    reference = SqliteVectorStore(SqliteVectorStoreSettings(), tmp_path)
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


@pytest.mark.parametrize("query", [
    '"foo" AND (bar', "*", "foo*", "NEAR(foo bar", "-foo", "^foo", "title:foo", "'", '"', "()", "AND OR NOT",
    "foo\x00bar", "{title text}: foo", "foo + bar", "ｆｏｏ", "日本語のテキスト", "a" * 5000, " ".join(["foo"] * 500),
    "", "   ", "!!!", "_", "foo_bar",
])
async def test_weird_queries_never_raise(store: QdrantVectorStore, query: str) -> None:
    texts = ["foo and bar live here", "日本語のテキスト", "AND OR NOT"]
    await store.replace_file("acme", "docs", "f", chunks("f", texts))
    hits = await store.search("acme", ["docs"], query)
    if "foo" in query.lower():
        assert hits and hits[0].chunk.id == "f:0"


# -- tenancy and scoping --------------------------------------------------------------------------


async def test_workspaces_never_see_each_other(store: QdrantVectorStore) -> None:
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
        assert [h.chunk.workspace for h in hits] == [workspace]
        assert await store.count(workspace, "docs") == 1
    # same dataset and file names, different workspaces: deleting one leaves the other
    assert await store.delete_file("globex", "docs", "f1") == 1
    assert await ids(store, "roadmap") == ["f1:0"]
    assert await ids(store, "roadmap", workspace="globex") == []
    assert await store.delete_dataset("globex", "docs") == 0
    assert await store.count("acme", "docs") == 1


async def test_search_is_scoped_to_datasets(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "a", "f", chunks("f", ["shared topic alpha"], dataset="a", vector=[1.0, 0.0]))
    await store.replace_file("acme", "b", "f", chunks("f", ["shared topic beta"], dataset="b", vector=[0.9, 0.1]))
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
async def filtered(store: QdrantVectorStore) -> QdrantVectorStore:
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
    ({"type": "eq", "key": "score", "value": 2}, {"de-2022"}),
    ({"type": "eq", "key": "year", "value": 2022.0}, {"de-2022"}),
    ({"type": "eq", "key": "public", "value": True}, {"en-2020"}),
    ({"type": "eq", "key": "public", "value": False}, {"en-2024"}),
    ({"type": "in", "key": "lang", "value": ["de", "fr"]}, {"de-2022", "fr-none"}),
    ({"type": "in", "key": "year", "value": [2020, "unknown", 1999]}, {"en-2020", "fr-none"}),
    ({"type": "nin", "key": "lang", "value": ["de", "fr"]}, {"en-2020", "en-2024", "bare"}),
    ({"type": "in", "key": "lang", "value": []}, set()),
    ({"type": "nin", "key": "lang", "value": []}, {name for name, _ in DOCS}),
    ({"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                 {"type": "gte", "key": "year", "value": 2021}]}, {"en-2024"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "lang", "value": "de"},
                                {"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                                            {"type": "lt", "key": "year", "value": 2021}]}]},
     {"de-2022", "en-2020"}),
    ({"type": "or", "filters": [{"type": "in", "key": "lang", "value": []},
                                {"type": "eq", "key": "lang", "value": "fr"}]}, {"fr-none"}),
    ({"type": "and", "filters": [{"type": "nin", "key": "lang", "value": []},
                                 {"type": "eq", "key": "lang", "value": "fr"}]}, {"fr-none"}),
    ({"type": "eq", "key": "lang", "value": "en' OR 1=1 --"}, set()),
    ({"type": "eq", "key": "la'ng) OR 1=1 --", "value": "en"}, set()),
    ({"type": "eq", "key": "lang.x", "value": "en"}, set()),
    ({"type": "eq", "key": "missing", "value": "x"}, set()),
])
async def test_filters(filtered: QdrantVectorStore, spec: dict[str, Any], expected: set[str]) -> None:
    lexical = await filtered.search("acme", ["docs"], "policy", k=10, filters=spec)
    assert {h.chunk.file_id for h in lexical} == expected
    dense = await filtered.search("acme", ["docs"], "", vector=[1.0, 0.0], k=10, filters=spec)
    assert {h.chunk.file_id for h in dense} == expected
    hybrid = await filtered.search("acme", ["docs"], "policy", vector=[1.0, 0.0], k=10, filters=spec)
    assert {h.chunk.file_id for h in hybrid} == expected


async def test_keys_with_dots_are_one_attribute(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "dotted", attributes={"a.b": 1, "a": {"b": 2}})])
    assert await ids(store, "dotted", filters={"type": "eq", "key": "a.b", "value": 1}) == ["f:0"]
    assert await ids(store, "dotted", filters={"type": "eq", "key": "a.b", "value": 2}) == []


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
    {"type": "gt", "key": "a", "value": "b"},
    {"type": "lte", "key": "a", "value": True},
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
async def test_invalid_filters(filtered: QdrantVectorStore, spec: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        await filtered.search("acme", ["docs"], "policy", filters=spec)
    assert info.value.status_code == 400 and info.value.param == "filters"


async def test_selective_filter_on_dense(store: QdrantVectorStore) -> None:
    many = [chunk("f", i, f"row {i}", vector=[1.0, i / 1000], attributes={"keep": i == 250}) for i in range(300)]
    await store.replace_file("acme", "docs", "f", many)
    hits = await store.search("acme", ["docs"], "", vector=[1.0, 0.0], k=3,
                              filters={"type": "eq", "key": "keep", "value": True})
    assert [h.chunk.id for h in hits] == ["f:250"]


# -- dense and hybrid -----------------------------------------------------------------------------


async def test_hybrid_fuses_rankings(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER, vector=[0.0, 0.0, 1.0]))
    await store.replace_file("acme", "docs", "f", [
        chunk("f", 0, "Refund policy for damaged anvils", vector=[-0.1, 1.0, 0.0]),       # lexical only
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
    # the same reciprocal rank fusion as the sqlite store: 1 / (rrf_k + rank), rank from 1
    rrf = store.settings.rrf_k
    assert hits[0].score == pytest.approx(1 / (rrf + lexical.index("f:2") + 1) + 1 / (rrf + 2))
    # dense-only scores are cosine similarities
    (best,) = await store.search("acme", ["docs"], "", vector=[2.0, 0.1, 0.0], k=1)
    assert best.chunk.id == "f:1" and best.score == pytest.approx(1.0, abs=1e-3)


async def test_vector_edge_cases(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "lexical words", vector=[1.0, 0.0]),
                                                   chunk("f", 1, "no vector here words"),
                                                   chunk("f", 2, "zero vector words", vector=[0.0, 0.0])])
    # a query vector of another dimension, zero or non-finite: lexical only
    for vector in ([1.0, 0.0, 0.0], [0.0, 0.0], [float("nan"), 1.0]):
        assert sorted(await ids(store, "words", vector=vector)) == ["f:0", "f:1", "f:2"]
        assert await ids(store, "", vector=vector) == []
    assert await ids(store, "", vector=[0.5, 0.5]) == ["f:0"]
    # a file with vectors of another size is refused whole
    with pytest.raises(ValueError, match="dimensions"):
        await store.replace_file("acme", "docs", "g", [chunk("g", 0, "other model", vector=[1.0, 0.0, 0.0])])
    assert await ids(store, "other model") == []


async def test_configured_dimension(make_store: StoreFactory) -> None:
    s = await make_store(dimension=3)
    await s.replace_file("acme", "docs", "f", chunks("f", ["lexical first"]))  # no vectors yet
    await s.replace_file("acme", "docs", "g", chunks("g", ["dense later"], vector=[0.0, 1.0, 0.0]))
    assert await ids(s, "", vector=[0.0, 1.0, 0.0]) == ["g:0"]
    with pytest.raises(ValueError):
        await s.replace_file("acme", "docs", "h", chunks("h", ["wrong size"], vector=[1.0, 0.0]))


@pytest.mark.parametrize("can_add_vectors", [True, False])
async def test_vectors_after_a_lexical_only_start(store: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch,
                                                  can_add_vectors: bool) -> None:
    from qdrant_client import QdrantClient

    if can_add_vectors and not hasattr(QdrantClient, "create_vector_name"):
        pytest.skip("this qdrant-client cannot add a named vector to a collection")
    if not can_add_vectors:
        monkeypatch.delattr(QdrantClient, "create_vector_name", raising=False)
    await store.replace_file("acme", "docs", "empty", [])  # makes no collection: it could not hold vectors
    # The collection is made by a write without vectors; later vectors add the dense vector to it.
    await store.replace_file("acme", "docs", "f", chunks("f", ["plain words only"]))
    if not can_add_vectors:
        with pytest.raises(RuntimeError, match="dimension = 2"):
            await store.replace_file("acme", "docs", "g", chunks("g", ["embedded words"], vector=[1.0, 0.0]))
        assert await ids(store, "words") == ["f:0"]
        return
    await store.replace_file("acme", "docs", "g", chunks("g", ["embedded words"], vector=[1.0, 0.0]))
    assert await ids(store, "", vector=[1.0, 0.0]) == ["g:0"]
    assert sorted(await ids(store, "words", vector=[1.0, 0.0])) == ["f:0", "g:0"]


async def test_dense_disabled_stores_no_vectors(make_store: StoreFactory) -> None:
    s = await make_store(dense=False)
    await s.replace_file("acme", "docs", "f", [chunk("f", 0, "text", vector=[1.0, 0.0])])
    assert await ids(s, "", vector=[1.0, 0.0]) == []
    assert await ids(s, "text", vector=[1.0, 0.0]) == ["f:0"]


async def test_dense_ranking_follows_writes(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[1.0, 0.0])])
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:0"]
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[0.0, 1.0]),
                                                   chunk("f", 1, "b", vector=[1.0, 0.0])])
    assert await ids(store, "", vector=[1.0, 0.0]) == ["f:1", "f:0"]
    await store.delete_file("acme", "docs", "f")
    assert await ids(store, "", vector=[1.0, 0.0]) == []


async def test_workspace_idf(make_store: StoreFactory) -> None:
    from qdrant_client import models

    if not hasattr(models, "IdfCorpusParams"):
        pytest.skip("this qdrant-client cannot scope IDF")
    s = await make_store(idf="workspace")
    # globex is full of "widget"; for acme it is a rare word and must keep its weight
    shared = await make_store()
    for t in (s, shared):
        await t.replace_file("globex", "docs", "g", chunks("g", [f"widget {i}" for i in range(30)], workspace="globex"))
        await t.replace_file("acme", "docs", "a", chunks("a", ["widget manual", "gadget manual", "gizmo manual"]))
    scoped = await s.search("acme", ["docs"], "widget manual")
    pooled = await shared.search("acme", ["docs"], "widget manual")
    assert scoped[0].chunk.id == pooled[0].chunk.id == "a:0"
    # acme's scores do not depend on globex's data with workspace IDF
    assert scoped[0].score - scoped[1].score > pooled[0].score - pooled[1].score


# -- the event loop -------------------------------------------------------------------------------


async def test_writes_and_searches_run_off_the_event_loop(store: QdrantVectorStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    await store.replace_file("acme", "docs", "seed", chunks("seed", ["seed text"]))  # creates the collection
    probe = OffLoop()
    client = store._client
    assert client is not None
    for name in ("upsert", "query_points", "delete", "count", "retrieve", "scroll", "set_payload"):
        monkeypatch.setattr(client, name, probe.wrap(getattr(client, name)))
    monkeypatch.setattr(store, "_points", probe.wrap(store._points))
    big = [chunk("big", i, f"bulk text number {i} " + " ".join(FILLER), vector=[1.0, i / 500]) for i in range(500)]
    await store.replace_file("acme", "docs", "big", big)
    hits = await store.search("acme", ["docs"], "bulk text", vector=[1.0, 0.0])
    assert hits and probe.calls >= 3 and not probe.failures
