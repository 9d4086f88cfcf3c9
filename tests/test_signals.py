"""Signals (shared counters and notifications) on every backend: SQLite, PostgreSQL, and Redis in
front of either; Redis going away degrades to the state store without a hang or a lost count."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chorus.storage.postgres.database import Database
from chorus.storage.postgres.signals import PgSignals
from chorus.storage.redis_signals import RedisSignals
from chorus.storage.signals import Signals, SqliteSignals
from chorus.testing.postgres import SKIP_REASON, postgres_url, scratch_schema

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


needs_postgres = pytest.mark.skipif(postgres_url() is None, reason=SKIP_REASON)
needs_redis = pytest.mark.skipif(not redis_available(), reason="no Redis at 127.0.0.1:6379: start redis-server")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres),
                        pytest.param("redis", marks=needs_redis)])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Signals, Signals]]:
    """Two signal stores of one deployment, as two instances (or two workers) hold them."""
    if request.param == "sqlite":
        made: list[Signals] = [SqliteSignals(tmp_path / "signals.sqlite3", poll_interval=0.05) for _ in range(2)]
        for s in made:
            await s.start()
        yield made[0], made[1]
        for s in made:
            await s.aclose()
        return
    url = postgres_url()
    if request.param == "redis":
        prefix = f"chorus:test-{secrets.token_hex(6)}"
        made = [RedisSignals(REDIS_URL, SqliteSignals(tmp_path / "signals.sqlite3", poll_interval=0.05), prefix=prefix)
                for _ in range(2)]
        for s in made:
            await s.start()
        yield made[0], made[1]
        for s in made:
            await s.aclose()
        return
    assert url is not None
    async with scratch_schema(url) as schema:
        dbs = [Database(url, schema=schema) for _ in range(2)]
        for db in dbs:
            await db.start()
        made = [PgSignals(db) for db in dbs]
        for s in made:
            await s.start()
        try:
            yield made[0], made[1]
        finally:
            for s in made:
                await s.aclose()
            for db in dbs:
                await db.aclose()


async def settle(predicate: object, seconds: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (a notification is delivered asynchronously)."""
    for _ in range(int(seconds / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not delivered in time")


async def test_counters_are_shared_and_windowed(pair: tuple[Signals, Signals]) -> None:
    a, b = pair
    first = await a.count("rpm:key_1", 1, 60)
    second = await b.count("rpm:key_1", 1, 60)
    third = await a.count("rpm:key_1", 5, 60)
    assert (first.value, second.value, third.value) == (1, 2, 7)
    assert 0 < third.reset_in <= 60
    assert (await b.count("rpm:key_2", 1, 60)).value == 1  # keys are independent


async def test_a_notification_reaches_every_instance(pair: tuple[Signals, Signals]) -> None:
    a, b = pair
    got_a: list[str] = []
    got_b: list[str] = []
    a.subscribe("keys.revoked", got_a.append)
    b.subscribe("keys.revoked", got_b.append)
    b.subscribe("other", lambda m: got_b.append("wrong channel"))
    await asyncio.sleep(0.3)  # listeners attached
    await a.publish("keys.revoked", "key_123")
    await settle(lambda: got_a == ["key_123"] and got_b == ["key_123"])
    await asyncio.sleep(0.2)
    assert got_a == ["key_123"] and got_b == ["key_123"]  # once each, and nothing from other channels


@needs_redis
async def test_redis_down_degrades_to_the_state_store_without_hanging(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable Redis: counts and notifications go through the state store; one warning."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    fallback = SqliteSignals(tmp_path / "signals.sqlite3", poll_interval=0.05)
    signals = RedisSignals(f"redis://127.0.0.1:{port}/0", fallback, timeout=0.5)
    await signals.start()
    try:
        got: list[str] = []
        signals.subscribe("keys.revoked", got.append)
        counts = [(await asyncio.wait_for(signals.count("rpm:k", 1, 60), 10)).value for _ in range(3)]
        assert counts == [1, 2, 3]
        await asyncio.wait_for(signals.publish("keys.revoked", "key_9"), 10)
        await settle(lambda: got == ["key_9"])
        warnings = [r for r in caplog.records if "Redis at" in r.getMessage() and "unreachable" in r.getMessage()]
        assert len(warnings) == 1 and str(port) in warnings[0].getMessage()
    finally:
        await signals.aclose()


@needs_redis
async def test_redis_counts_when_up_then_falls_back_and_returns(tmp_path: Path) -> None:
    """Counts go to Redis while it answers (the fallback stays empty), to the state store while it
    is down, and to Redis again once it is back."""
    fallback = SqliteSignals(tmp_path / "signals.sqlite3", poll_interval=0.05)
    signals = RedisSignals(REDIS_URL, fallback, prefix=f"chorus:test-{secrets.token_hex(6)}", retry=0.2)
    await signals.start()
    try:
        assert (await signals.count("k", 1, 60)).value == 1
        assert (await fallback.count("k", 0, 60)).value == 0  # nothing reached the fallback
        real = signals._client
        signals._client = signals._client.__class__.from_url("redis://127.0.0.1:9/0", socket_timeout=0.2,
                                                              socket_connect_timeout=0.2)
        assert (await signals.count("k", 1, 60)).value == 1  # counted by the fallback
        assert not signals.redis_up
        await signals._client.aclose()
        signals._client = real
        await asyncio.sleep(0.3)
        assert (await signals.count("k", 1, 60)).value == 2  # Redis again, its own total
        assert signals.redis_up
    finally:
        await signals.aclose()
