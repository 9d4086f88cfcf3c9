"""The ``qdrant`` driver on embedded local mode: the conformance kit, plus settings, paths, the
analyzer, agreement with the ``sqlite`` store, numeric-only range filters, vector sizes, IDF scope."""

from __future__ import annotations

import asyncio
import math
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed")
pytest.importorskip("chorus_vectorstore_qdrant", reason="chorus-vectorstore-qdrant is not installed")

from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings
from qdrant_testing import Conformance, QdrantFactory, raw_chunks, settings

from chorus.errors import ConfigError
from chorus.testing.gateway import load_driver
from chorus.testing.offloop import OffLoop
from chorus.testing.vectorstores import (
    CHECKS,
    FILLER,
    SCORING_CHECKS,
    Check,
    assert_filter_refused,
    check_replace_delete_count,
    chunk,
    chunks,
    ids,
    load_filter_docs,
)


@pytest.mark.parametrize("check", CHECKS + SCORING_CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: Check, make_store: QdrantFactory) -> None:
    await check(Conformance(make_store))


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


SECOND_PROCESS = """
import asyncio, sys
from pathlib import Path
from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings

async def main():
    store = QdrantVectorStore(QdrantVectorStoreSettings(driver="qdrant"), Path(sys.argv[1]))
    try:
        await store.start()
    except RuntimeError as exc:
        print(exc)

asyncio.run(main())
"""


async def test_a_directory_in_use_says_to_use_a_server_with_workers(tmp_path: Path) -> None:
    first = QdrantVectorStore(settings(), tmp_path)
    await first.start()
    try:  # what a second worker of `chorus serve --workers 2` would meet
        second = await asyncio.create_subprocess_exec(sys.executable, "-c", SECOND_PROCESS, str(tmp_path),
                                                      stdout=asyncio.subprocess.PIPE)
        output, _ = await asyncio.wait_for(second.communicate(), 120)
    finally:
        await first.aclose()
    assert "in use by another process" in output.decode() and "`[vector_store] url`" in output.decode()


async def test_deletes_leave_no_points(make_store: QdrantFactory) -> None:
    stores = Conformance(make_store)
    await check_replace_delete_count(stores)
    (store,) = stores.made
    assert await raw_chunks(store) == []


async def test_rejects_repeated_indexes_and_mixed_vector_sizes(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["original text"]))
    for bad in ([chunk("f1", 0, "x"), chunk("f1", 0, "y")],
                [chunk("f1", 0, "x", vector=[1.0, 0.0]), chunk("f1", 1, "y", vector=[1.0, 0.0, 0.0])]):
        with pytest.raises(ValueError):
            await store.replace_file("acme", "docs", "f1", bad)
    assert await ids(store, "original") == ["f1:0"]


async def test_analyzer_change_is_refused(make_store: QdrantFactory) -> None:
    s = await make_store(path="kb")
    await s.replace_file("acme", "docs", "f1", chunks("f1", ["running"]))
    await s.aclose()
    with pytest.raises(ConfigError, match="stemmer"):
        await make_store(path="kb", stemmer="")
    s = await make_store(path="kb")
    assert await ids(s, "runs") == ["f1:0"]


# -- lexical ranking ------------------------------------------------------------------------------


async def test_ranking_agrees_with_the_sqlite_store(store: QdrantVectorStore, tmp_path: Path) -> None:
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
    queries = ["delivery to Europe", "express shipping united states", "refund payment method", "return policy days",
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


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    {"type": "gt", "key": "a", "value": "b"},
    {"type": "lte", "key": "a", "value": True},
    {"type": "gt", "key": "year", "value": "a"},   # the sqlite store compares strings here
])
async def test_range_filters_take_numbers_only(store: QdrantVectorStore, spec: Any) -> None:
    await load_filter_docs(store)
    await assert_filter_refused(store, spec)


# -- dense and hybrid -----------------------------------------------------------------------------


async def test_zero_chunk_vectors_are_not_stored_and_other_sizes_refused(store: QdrantVectorStore) -> None:
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "lexical words", vector=[1.0, 0.0]),
                                                   chunk("f", 1, "no vector here words"),
                                                   chunk("f", 2, "zero vector words", vector=[0.0, 0.0])])
    for vector in ([1.0, 0.0, 0.0], [0.0, 0.0], [math.nan, 1.0]):
        assert sorted(await ids(store, "words", vector=vector)) == ["f:0", "f:1", "f:2"]
        assert await ids(store, "", vector=vector) == []
    assert await ids(store, "", vector=[0.5, 0.5]) == ["f:0"]
    # a file with vectors of another size is refused whole
    with pytest.raises(ValueError, match="dimensions"):
        await store.replace_file("acme", "docs", "g", [chunk("g", 0, "other model", vector=[1.0, 0.0, 0.0])])
    assert await ids(store, "other model") == []


async def test_configured_dimension(make_store: QdrantFactory) -> None:
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


async def test_workspace_idf(make_store: QdrantFactory) -> None:
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
