"""SqliteThread: the one connection and worker thread behind the parked-turn, signals and response stores."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from chorus.storage.sqlitedb import SqliteThread


def schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")


async def test_every_call_runs_on_one_worker_thread_with_the_wal_connection(tmp_path: Path) -> None:
    sqlite = SqliteThread("the test store", thread_name="chorus-test")
    await sqlite.open(tmp_path / "new" / "t.sqlite3", schema)  # the folder is made
    try:
        assert sqlite.started
        seen = [await sqlite.run(lambda db: (threading.current_thread().name, db.execute("PRAGMA journal_mode").fetchone()[0]))
                for _ in range(3)]
        assert len({name for name, _ in seen}) == 1 and seen[0][0].startswith("chorus-test")
        assert seen[0][1] == "wal"
        await sqlite.open(tmp_path / "elsewhere.sqlite3", schema)  # already started: nothing happens
        assert not (tmp_path / "elsewhere.sqlite3").exists()
    finally:
        await sqlite.close()


async def test_errors_of_a_call_reach_the_caller_unchanged(tmp_path: Path) -> None:
    sqlite = SqliteThread("the test store", thread_name="chorus-test")
    await sqlite.open(tmp_path / "t.sqlite3", schema)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await sqlite.run(lambda db: db.execute("SELECT * FROM missing"))
        assert await sqlite.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == 0  # still usable
    finally:
        await sqlite.close()


async def test_not_started_before_open_and_after_close_and_reopenable(tmp_path: Path) -> None:
    sqlite = SqliteThread("the test store", thread_name="chorus-test")
    with pytest.raises(RuntimeError, match="the test store is not started"):
        await sqlite.run(lambda db: None)
    await sqlite.close()  # closing an unstarted helper does nothing
    await sqlite.open(tmp_path / "t.sqlite3", schema)
    await sqlite.run(lambda db: db.execute("INSERT INTO t VALUES (1)"))
    await sqlite.close()
    await sqlite.close()
    assert not sqlite.started
    with pytest.raises(RuntimeError, match="not started"):
        await sqlite.run(lambda db: None)
    await sqlite.open(tmp_path / "t.sqlite3", schema)
    try:
        assert await sqlite.run(lambda db: db.execute("SELECT x FROM t").fetchall()) == [(1,)]
    finally:
        await sqlite.close()


async def test_a_failed_open_leaves_it_unstarted_and_a_later_open_works(tmp_path: Path) -> None:
    sqlite = SqliteThread("the test store", thread_name="chorus-test")
    opened: list[sqlite3.Connection] = []

    def broken(db: sqlite3.Connection) -> None:
        opened.append(db)
        db.execute("NOT SQL")

    with pytest.raises(sqlite3.OperationalError):
        await sqlite.open(tmp_path / "t.sqlite3", broken)
    assert not sqlite.started
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):  # the failed open's connection is closed
        opened[0].execute("SELECT 1")
    await sqlite.open(tmp_path / "t.sqlite3", schema)
    try:
        assert await sqlite.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await sqlite.close()
