"""``replace_file`` is atomic: failures, crashes and concurrent writers never expose a partial file."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed")
pytest.importorskip("chorus_vectorstore_qdrant", reason="chorus-vectorstore-qdrant is not installed")

from chorus_vectorstore_qdrant import QdrantVectorStore
from qdrant_testing import Conformance, QdrantFactory, raw_chunks

from chorus.testing import vectorstores as kit
from chorus.testing.vectorstores import FILLER, chunks, ids, kill_mid_write

OLD = ["old alpha", "old beta", "old gamma"]
NEW = ["novel delta", "novel epsilon", "novel zeta", "novel eta", "novel theta"]


def patch_client(monkeypatch: pytest.MonkeyPatch, store: QdrantVectorStore, method: str,
                 wrapper: Callable[[Callable[..., Any], dict[str, Any]], Any]) -> None:
    """Route ``store``'s Qdrant ``method`` calls through ``wrapper(real, kwargs)``."""
    client = store._client
    real = getattr(client, method)
    monkeypatch.setattr(client, method, lambda **kwargs: wrapper(real, kwargs))


def is_flip(kwargs: dict[str, Any]) -> bool:
    return kwargs.get("update_filter") is not None


async def assert_old_intact(store: QdrantVectorStore) -> None:
    assert sorted(await ids(store, "old", k=20)) == ["f:0", "f:1", "f:2"]
    assert await ids(store, "delta epsilon zeta eta theta", k=20) == []
    assert sorted(await ids(store, "", vector=[1.0, 0.0], k=20)) == ["f:0", "f:1", "f:2"]
    assert await store.count("acme", "docs", "f") == 3
    assert await store.count("acme", "docs") == 3 + len(FILLER)


@pytest.fixture
async def loaded(make_store: QdrantFactory) -> QdrantVectorStore:
    s = await make_store(batch_size=2, dimension=2)
    await s.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await s.replace_file("acme", "docs", "f", chunks("f", OLD, vector=[1.0, 0.0]))
    return s


async def test_failure_mid_upsert_keeps_old_and_leaves_nothing(loaded: QdrantVectorStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    batches = 0

    def failing(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        nonlocal batches
        if not is_flip(kwargs):
            batches += 1
            if batches == 2:  # the first batch of new chunks is in; the second fails
                raise OSError("disk full while writing chunks")
        return real(**kwargs)

    patch_client(monkeypatch, loaded, "upsert", failing)
    with pytest.raises(OSError, match="disk full"):
        await loaded.replace_file("acme", "docs", "f", chunks("f", NEW, vector=[1.0, 0.0]))
    monkeypatch.undo()
    assert batches == 2
    await assert_old_intact(loaded)
    assert sorted(p["text"] for p in await raw_chunks(loaded, "f")) == sorted(OLD)  # partial write removed
    # the store works afterwards
    await loaded.replace_file("acme", "docs", "f", chunks("f", ["fresh text"]))
    assert await ids(loaded, "fresh") == ["f:0"]
    assert [p["text"] for p in await raw_chunks(loaded, "f")] == ["fresh text"]


async def test_failed_flip_keeps_old(loaded: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if is_flip(kwargs):
            raise ConnectionError("connection reset")
        return real(**kwargs)

    patch_client(monkeypatch, loaded, "upsert", failing)
    with pytest.raises(ConnectionError):
        await loaded.replace_file("acme", "docs", "f", chunks("f", NEW, vector=[1.0, 0.0]))
    monkeypatch.undo()
    await assert_old_intact(loaded)
    assert sorted(p["text"] for p in await raw_chunks(loaded, "f")) == sorted(OLD)


async def test_flip_applied_but_answer_lost_counts_as_done(loaded: QdrantVectorStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def lossy(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        result = real(**kwargs)
        if is_flip(kwargs):
            raise TimeoutError("timed out reading the response")
        return result

    patch_client(monkeypatch, loaded, "upsert", lossy)
    await loaded.replace_file("acme", "docs", "f", chunks("f", NEW))
    monkeypatch.undo()
    assert sorted(await ids(loaded, "novel", k=20)) == [f"f:{i}" for i in range(5)]
    assert await ids(loaded, "old") == []
    assert await loaded.count("acme", "docs", "f") == 5


@pytest.mark.parametrize("applied", [False, True])
async def test_flip_with_unknown_outcome_leaves_one_whole_version(
        loaded: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch, applied: bool) -> None:
    # The flip's answer is lost and so is the read-back: the driver cannot tell, so it must not
    # delete the new chunks (they may be current); either way readers see one whole version.
    flipped = False

    def flip(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        nonlocal flipped
        if is_flip(kwargs):
            flipped = True
            if applied:
                real(**kwargs)
            raise TimeoutError("timed out")
        return real(**kwargs)

    def retrieve(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if flipped:
            raise TimeoutError("timed out again")
        return real(**kwargs)

    patch_client(monkeypatch, loaded, "upsert", flip)
    patch_client(monkeypatch, loaded, "retrieve", retrieve)
    with pytest.raises(TimeoutError, match="timed out"):
        await loaded.replace_file("acme", "docs", "f", chunks("f", NEW, vector=[1.0, 0.0]))
    assert flipped
    monkeypatch.undo()
    texts = {h.chunk.text for h in await loaded.search("acme", ["docs"], "old novel", vector=[1.0, 0.0], k=20)}
    assert texts == (set(NEW) if applied else set(OLD))
    assert await loaded.count("acme", "docs", "f") == len(texts)


async def test_crash_before_the_flip_leaves_invisible_leftovers(loaded: QdrantVectorStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate dying after the new chunks were written: the flip fails and so does the cleanup.
    def no_flip(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if is_flip(kwargs):
            raise ConnectionError("process killed")
        return real(**kwargs)

    def no_delete(real: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        raise ConnectionError("process killed")

    patch_client(monkeypatch, loaded, "upsert", no_flip)
    patch_client(monkeypatch, loaded, "delete", no_delete)
    with pytest.raises(ConnectionError):
        await loaded.replace_file("acme", "docs", "f", chunks("f", NEW, vector=[1.0, 0.0]))
    monkeypatch.undo()
    assert len(await raw_chunks(loaded, "f")) == len(OLD) + len(NEW)  # the leftovers are there...
    await assert_old_intact(loaded)                                    # ...and invisible
    hybrid = await loaded.search("acme", ["docs"], "novel old", vector=[1.0, 0.0], k=20)
    assert sorted(h.chunk.id for h in hybrid) == ["f:0", "f:1", "f:2"]
    assert {h.chunk.text for h in hybrid} == set(OLD)
    # the next write of the file removes them
    await loaded.replace_file("acme", "docs", "f", chunks("f", ["next version"]))
    assert [p["text"] for p in await raw_chunks(loaded, "f")] == ["next version"]


async def test_crash_after_the_flip_is_finished_by_readers(loaded: QdrantVectorStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate dying after the flip, before the old chunks were deleted.
    patch_client(monkeypatch, loaded, "delete", lambda real, kwargs: (_ for _ in ()).throw(ConnectionError("killed")))
    await loaded.replace_file("acme", "docs", "f", chunks("f", NEW, vector=[1.0, 0.0]))
    monkeypatch.undo()
    assert len(await raw_chunks(loaded, "f")) == len(OLD) + len(NEW)
    hits = await loaded.search("acme", ["docs"], "old novel alpha delta", vector=[1.0, 0.0], k=20)
    assert sorted(h.chunk.text for h in hits) == sorted(NEW)
    # the search noticed the outdated chunks and removed them
    assert sorted(p["text"] for p in await raw_chunks(loaded, "f")) == sorted(NEW)
    assert await loaded.count("acme", "docs", "f") == 5


CRASH_CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from chorus.testing.vectorstores import chunk
    from chorus_vectorstore_qdrant import QdrantVectorStore, QdrantVectorStoreSettings

    async def main():
        store = QdrantVectorStore(QdrantVectorStoreSettings(driver="qdrant", batch_size=50), Path(sys.argv[1]))
        await store.start()
        real = store._client.upsert
        calls = []

        def upsert(**kwargs):
            calls.append(1)
            if len(calls) == 4:                    # three batches of new chunks are in
                real(**{**kwargs, "points": kwargs["points"][:20]})  # and part of the fourth
                print("inside", flush=True)
                time.sleep(60)                     # until we are killed
            return real(**kwargs)

        store._client.upsert = upsert
        chunks = [chunk("f", i, f"partial newword{i} filler text", vector=[1.0, 0.5]) for i in range(400)]
        await store.replace_file("acme", "docs", "f", chunks)
        print("committed", flush=True)

    asyncio.run(main())
""")


async def test_killed_mid_replace_keeps_previous_chunks(make_store: QdrantFactory, tmp_path: Path) -> None:
    old = chunks("f", [f"original chunk number {i}" for i in range(120)], vector=[0.0, 1.0])
    s = await make_store(path=str(tmp_path / "qdrant"))  # where the child's default settings put it
    await s.replace_file("acme", "docs", "f", old)
    await s.aclose()

    await kill_mid_write(CRASH_CHILD, str(tmp_path))

    s = await make_store(path=str(tmp_path / "qdrant"))
    assert len(await raw_chunks(s, "f")) == 120 + 170  # the dead write's points are on disk...
    assert await s.count("acme", "docs", "f") == 120   # ...and invisible
    hits = await s.search("acme", ["docs"], "original chunk", k=200)
    assert sorted(h.chunk.id for h in hits) == sorted(c.id for c in old)
    assert await ids(s, "partial newword7") == []
    assert len(await s.search("acme", ["docs"], "", vector=[1.0, 0.5], k=500)) == 120
    await s.replace_file("acme", "docs", "f", chunks("f", ["after the crash"]))
    assert [p["text"] for p in await raw_chunks(s, "f")] == ["after the crash"]


# -- concurrency: the kit's checks, then a look at the points they left ---------------------------


async def test_concurrent_writers_leave_no_stray_points(make_store: QdrantFactory) -> None:
    stores = Conformance(make_store)
    await kit.check_concurrent_writers_of_one_file_converge(stores)
    await kit.check_concurrent_replace_and_delete_converge(stores)
    for store in stores.made:   # the losers' and the deleted chunks are gone, not only invisible
        hits = await store.search("acme", ["docs"], "shared words", k=100)
        assert sorted(p["text"] for p in await raw_chunks(store, "f")) == sorted(h.chunk.text for h in hits)


async def test_searches_while_writing_in_batches_see_whole_files(make_store: QdrantFactory) -> None:
    several_upserts_per_write = Conformance(make_store, batch_size=16, dimension=2)
    await kit.check_searches_while_writing_see_whole_files(several_upserts_per_write, versions=16)
