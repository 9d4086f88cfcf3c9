"""chorus.testing.offloop: the probe that proves blocking work runs off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chorus.testing.offloop import OffLoop


async def test_a_call_on_a_worker_thread_passes_and_returns_its_result() -> None:
    probe = OffLoop()
    assert await asyncio.to_thread(probe.wrap(lambda x: x * 2), 21) == 42
    assert probe.calls == 1 and not probe.failures


async def test_a_call_on_the_loop_thread_fails() -> None:
    probe = OffLoop(timeout=1)
    with pytest.raises(AssertionError, match="ran on the event loop's thread"):
        probe.wrap(lambda: 1)()
    assert len(probe.failures) == 1 and probe.failures[0].endswith("<lambda> ran on the event loop's thread")


async def test_a_call_while_the_loop_is_blocked_fails() -> None:
    probe = OffLoop(timeout=0.2)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            probe.wrap(lambda: 1)()
        except AssertionError as exc:
            raised.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()  # the loop's thread waits here, so the probe's callback cannot run
    assert [str(e) for e in raised] == probe.failures
    assert len(probe.failures) == 1 and probe.failures[0].startswith("the event loop did not run while ")


async def test_a_driver_that_blocks_the_loop_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLite store with its write pool bypassed (work run inline on the loop) fails the probe."""
    from chorus.contract.documents import Chunk
    from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings

    store = SqliteVectorStore(SqliteVectorStoreSettings(), tmp_path)
    await store.start()
    try:
        async def inline(fn: Callable[[Any], Any]) -> Any:
            return fn(store._writer)

        monkeypatch.setattr(store, "_write", inline)
        probe = OffLoop(timeout=1)
        monkeypatch.setattr(store, "replace_file_sync", probe.wrap(store.replace_file_sync))
        chunk = Chunk(id="f:0", workspace="acme", dataset="docs", file_id="f", index=0, text="hello")
        with pytest.raises(AssertionError):
            await store.replace_file("acme", "docs", "f", [chunk])
        assert probe.failures == ["SqliteVectorStore.replace_file_sync ran on the event loop's thread"]
    finally:
        await store.aclose()
