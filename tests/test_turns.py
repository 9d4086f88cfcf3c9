"""Parked agent turns: the memory and SQLite stores, and the SQLite store shared across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from chorus.contract.schemas import Message
from chorus.runtime.resume import restore_messages, resumed_call_ids
from chorus.storage.turns import MemoryTurnStore, ParkedTurn, SqliteTurnStore, TurnStore
from chorus.testing.offloop import OffLoop


def turn(tag: str) -> ParkedTurn:
    call = {"id": f"s-{tag}", "type": "function", "function": {"name": "echo", "arguments": "{}"}}
    return ParkedTurn(
        hidden=[Message(role="assistant", tool_calls=[call]), Message(role="tool", tool_call_id=f"s-{tag}", content=tag)],
        assistant=Message(role="assistant", content=None, tool_calls=[{**call, "id": f"u-{tag}"}]),
        results=[],
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TurnStore]:
    made: TurnStore = MemoryTurnStore() if request.param == "memory" else SqliteTurnStore(tmp_path / "turns.sqlite3")
    await made.start()
    try:
        yield made
    finally:
        await made.aclose()


async def test_a_parked_turn_is_found_under_each_call_id_and_stays_for_retries(store: TurnStore) -> None:
    parked = turn("a")
    await store.park("acme", ["u1", "u2"], parked)
    assert await store.take_many("acme", ["u1", "u2", "nope"]) == {"u1": parked, "u2": parked}
    assert await store.take_many("acme", ["u1"]) == {"u1": parked}  # a retried resume finds it again


async def test_another_workspace_finds_nothing(store: TurnStore) -> None:
    await store.park("acme", ["u1"], turn("a"))
    assert await store.take_many("globex", ["u1"]) == {}


async def test_parking_again_under_an_id_replaces_the_turn(store: TurnStore) -> None:
    await store.park("acme", ["u1"], turn("a"))
    await store.park("acme", ["u1"], turn("b"))
    assert await store.take_many("acme", ["u1"]) == {"u1": turn("b")}


async def test_expired_turns_are_gone(store: TurnStore) -> None:
    store.ttl = -1.0  # already expired when parked
    await store.park("acme", ["u1"], turn("a"))
    assert await store.take_many("acme", ["u1"]) == {}


async def test_many_call_ids_in_one_lookup(store: TurnStore) -> None:
    ids = [f"u{i}" for i in range(1200)]  # more than SQLite binds in one statement by default
    await store.park("acme", ids[::7], turn("a"))
    assert sorted(await store.take_many("acme", ids)) == sorted(ids[::7])


async def test_memory_store_drops_the_oldest_past_its_bound() -> None:
    store = MemoryTurnStore(max_entries=3)
    for i in range(5):
        await store.park("acme", [f"u{i}"], turn(str(i)))
    assert len(store) == 3
    assert sorted(await store.take_many("acme", [f"u{i}" for i in range(5)])) == ["u2", "u3", "u4"]


async def test_sqlite_store_prunes_expired_and_excess_rows(tmp_path: Path) -> None:
    store = SqliteTurnStore(tmp_path / "t.sqlite3", max_entries=10)
    store.prune_every = 5
    await store.start()
    try:
        store.ttl = -1.0
        await store.park("acme", ["old"], turn("old"))  # expired: pruned at the next prune
        store.ttl = 3600.0
        for i in range(14):
            await store.park("acme", [f"u{i}"], turn(str(i)))
        rows = await store._sqlite.run(lambda db: db.execute("SELECT call_id FROM parked_turns").fetchall())
        # pruned on the 5th, 10th and 15th park: the expired row and the oldest beyond 10 are gone
        assert sorted(r[0] for r in rows) == sorted(f"u{i}" for i in range(4, 14))
    finally:
        await store.aclose()


async def test_sqlite_store_works_off_the_event_loop(tmp_path: Path) -> None:
    store = SqliteTurnStore(tmp_path / "t.sqlite3")
    await store.start()
    real = store._sqlite._db
    assert real is not None
    probe = OffLoop()

    # sqlite3.Connection's methods cannot be patched: stand in for the connection
    store._sqlite._db = SimpleNamespace(execute=probe.wrap(real.execute), executemany=probe.wrap(real.executemany))  # type: ignore[assignment]
    try:
        await store.park("acme", ["u1"], turn("a"))
        assert await store.take_many("acme", ["u1"]) == {"u1": turn("a")}
        assert probe.calls >= 4 and not probe.failures
    finally:
        store._sqlite._db = real
        await store.aclose()


async def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    first = SqliteTurnStore(tmp_path / "t.sqlite3")
    await first.start()
    await first.park("acme", ["u1"], turn("a"))
    await first.aclose()
    second = SqliteTurnStore(tmp_path / "t.sqlite3")
    await second.start()
    try:
        assert await second.take_many("acme", ["u1"]) == {"u1": turn("a")}
    finally:
        await second.aclose()


PARK_IN_CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from chorus.contract.schemas import Message
    from chorus.storage.turns import ParkedTurn, SqliteTurnStore

    async def main():
        store = SqliteTurnStore(Path(sys.argv[1]))
        await store.start()
        await store.park("acme", ["from-child"], ParkedTurn(
            hidden=[Message(role="tool", tool_call_id="s1", content="child")],
            assistant=Message(role="assistant", content="hi"), results=[]))
        await store.aclose()

    asyncio.run(main())
""")


async def test_a_turn_parked_by_another_process_is_restored_here(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    here = SqliteTurnStore(path)
    await here.start()  # open first: the child writes while this connection is open (as workers do)
    try:
        subprocess.run([sys.executable, "-c", PARK_IN_CHILD, str(path)], check=True, timeout=60)
        found = await here.take_many("acme", ["from-child"])
        assert found["from-child"].hidden == [Message(role="tool", tool_call_id="s1", content="child")]
    finally:
        await here.aclose()


async def test_restore_messages_replaces_the_client_copy(store: TurnStore) -> None:
    parked = turn("a")
    await store.park("acme", ["u-a"], parked)
    client_copy = Message(role="assistant", content=None,
                          tool_calls=[{"id": "u-a", "type": "function", "function": {"name": "echo", "arguments": "{}"}}])
    messages = [Message(role="user", content="go"), client_copy, Message(role="tool", tool_call_id="u-a", content="ok")]
    ids = resumed_call_ids(messages)
    assert ids == ["u-a"]
    restored = await restore_messages(messages, "acme", store, ids)
    assert restored == [messages[0], *parked.restore(), messages[2]]
    assert await restore_messages(messages, "globex", store, ids) is messages


def test_resumed_call_ids_skips_messages_without_calls() -> None:
    messages = [Message(role="user", content="x"), Message(role="assistant", content="y"),
                Message(role="assistant", tool_calls=[]), Message(role="assistant", tool_calls=[{"id": 7}])]
    assert resumed_call_ids(messages) == []


async def test_an_unstarted_sqlite_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await SqliteTurnStore(tmp_path / "t.sqlite3").take_many("acme", ["u1"])


async def test_a_broken_database_is_logged_and_never_fails_the_request(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteTurnStore(tmp_path / "t.sqlite3")
    await store.start()
    try:
        await store._sqlite.run(lambda db: db.execute("DROP TABLE parked_turns"))
        await store.park("acme", ["u1"], turn("a"))
        assert await store.take_many("acme", ["u1"]) == {}
    finally:
        await store.aclose()
    assert "parked turn of workspace acme not stored" in caplog.text
    assert "parked turns of workspace acme not read" in caplog.text
