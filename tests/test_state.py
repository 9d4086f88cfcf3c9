"""The state layer on both backends: the catalog, parked turns and locks behave the same on SQLite
(the embedded default) and PostgreSQL; PostgreSQL migrations, outages and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from chorus.contract.config import parse_config
from chorus.contract.errors import StateUnavailable
from chorus.contract.schemas import Message
from chorus.storage.catalog import StoreFileRecord
from chorus.storage.postgres.database import MIGRATIONS, Database, migrate, pending
from chorus.storage.state import State, open_state
from chorus.storage.turns import ParkedTurn
from chorus.testing.postgres import SKIP_REASON, claim_schema, postgres_url, scratch_schema

needs_postgres = pytest.mark.skipif(postgres_url() is None, reason=SKIP_REASON)


def _config(url: str | None, schema: str, **state: object) -> object:
    table: dict[str, object] = {"schema": schema, **state}
    if url:
        table["url"] = url
    return parse_config({"state": table})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres)])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[State]:
    if request.param == "sqlite":
        made = open_state(_config(None, "chorus"), tmp_path)  # type: ignore[arg-type]
        await made.start()
        yield made
        await made.aclose()
        return
    url = postgres_url()
    assert url is not None
    async with scratch_schema(url) as schema:
        made = open_state(_config(url, schema), tmp_path)  # type: ignore[arg-type]
        await made.start()
        try:
            yield made
        finally:
            await made.aclose()


async def test_files_and_their_bytes(state: State) -> None:
    catalog = state.catalog
    record = await catalog.add_file("acme", "a.txt", b"hello", "assistants", "sha-a")
    assert record.bytes == 5 and record.id.startswith("file-")
    assert await catalog.get_file("acme", record.id) == record
    assert await catalog.read_file("acme", record.id) == b"hello"
    other = await catalog.add_file("acme", "b.txt", b"x" * 300_000, "batch", "sha-b")
    assert {f.id for f in await catalog.list_files("acme")} == {record.id, other.id}
    assert [f.id for f in await catalog.list_files("acme", "batch")] == [other.id]
    replaced = await catalog.add_file("acme", "a2.txt", b"bye", "assistants", "sha-a2", file_id=record.id)
    assert await catalog.read_file("acme", record.id) == b"bye" and replaced.filename == "a2.txt"
    assert await catalog.delete_file("acme", record.id) is True
    assert await catalog.get_file("acme", record.id) is None
    with pytest.raises(FileNotFoundError):
        await catalog.read_file("acme", record.id)
    assert await catalog.delete_file("acme", record.id) is False


async def test_every_lookup_is_scoped_to_the_workspace(state: State) -> None:
    catalog = state.catalog
    record = await catalog.add_file("acme", "a.txt", b"hello", "assistants", "sha")
    store = await catalog.create_store("acme", "docs", {"team": "a"})
    assert await catalog.get_file("globex", record.id) is None
    assert await catalog.list_files("globex") == []
    assert await catalog.delete_file("globex", record.id) is False
    assert await catalog.get_store("globex", store.id) is None
    assert await catalog.list_stores("globex") == []
    assert await catalog.delete_store("globex", store.id) is False
    assert await catalog.get_file("acme", record.id) is not None
    assert await catalog.get_store("acme", store.id) is not None


async def test_vector_stores_and_their_files(state: State) -> None:
    catalog = state.catalog
    store = await catalog.create_store("acme", "docs", {"team": "a"})
    assert store.id.startswith("vs_") and store.metadata == {"team": "a"} and store.origin == "api"
    again = await catalog.create_store("acme", "renamed", {}, store_id=store.id)
    assert again.name == "renamed" and again.created_at == store.created_at and again.metadata == {"team": "a"}
    config = await catalog.create_store("acme", "", {}, store_id="handbook", origin="config")
    assert config.origin == "config"
    await catalog.update_store("acme", store.id, None, {"team": "b"})
    updated = await catalog.get_store("acme", store.id)
    assert updated is not None and updated.name == "renamed" and updated.metadata == {"team": "b"}
    entry = StoreFileRecord(workspace="acme", vector_store_id=store.id, file_id="file-1", status="completed",
                            last_error=None, created_at=1, chunks=3, usage_bytes=10, sha256="s",
                            attributes={"lang": "en"}, source="a.md")
    failed = StoreFileRecord(workspace="acme", vector_store_id="handbook", file_id="file-1", status="failed",
                             last_error={"code": "unsupported_file", "message": "no"}, created_at=2, chunks=0,
                             usage_bytes=0, sha256="s", attributes={}, source="a.md")
    await catalog.put_store_file(entry)
    await catalog.put_store_file(failed)
    assert await catalog.get_store_file("acme", store.id, "file-1") == entry
    assert await catalog.list_store_files("acme", "handbook") == [failed]
    assert sorted(await catalog.stores_with_file("acme", "file-1")) == sorted([store.id, "handbook"])
    assert await catalog.delete_store_file("acme", "handbook", "file-1") is True
    assert await catalog.delete_store_file("acme", "handbook", "file-1") is False
    assert await catalog.delete_store("acme", store.id) is True
    assert await catalog.get_store_file("acme", store.id, "file-1") is None  # entries go with their store
    assert [s.id for s in await catalog.list_stores("acme")] == ["handbook"]


async def test_parked_turns(state: State) -> None:
    turn = ParkedTurn(hidden=[Message(role="assistant", content="thinking")],
                      assistant=Message(role="assistant", content=None, tool_calls=[{"id": "call_1"}]), results=[])
    await state.turns.park("acme", ["call_1", "call_2"], turn)
    assert await state.turns.take_many("acme", ["call_1", "call_9"]) == {"call_1": turn}
    assert await state.turns.take_many("acme", ["call_2"]) == {"call_2": turn}  # a take keeps it (retries)
    assert await state.turns.take_many("globex", ["call_1"]) == {}


async def test_locks_are_exclusive_while_held(state: State) -> None:
    async with state.try_lock("dataset-sync:acme/docs") as first:
        assert first is True
        async with state.try_lock("dataset-sync:acme/docs") as second:
            assert second is False
        async with state.try_lock("dataset-sync:acme/other") as unrelated:
            assert unrelated is True
    async with state.try_lock("dataset-sync:acme/docs") as again:
        assert again is True


# -- PostgreSQL only ------------------------------------------------------------------------------


@needs_postgres
async def test_instances_starting_together_migrate_once() -> None:
    url = postgres_url()
    assert url is not None
    async with scratch_schema(url) as schema:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        try:
            for conn in conns:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"; SET search_path TO "{schema}"')
            applied = await asyncio.gather(*(migrate(conn, schema) for conn in conns))
            assert sorted(len(a) for a in applied) == [0, 0, len(MIGRATIONS)]  # one applied them, two waited
            assert await pending(conns[0]) == []
            rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
            assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS]
        finally:
            for conn in conns:
                await conn.close()


@needs_postgres
async def test_instances_starting_together_create_the_schema_once() -> None:
    """Found by the two-instance test: concurrent ``CREATE SCHEMA IF NOT EXISTS`` can fail with a
    unique violation in PostgreSQL's catalog; starting is serialised by the migration lock."""
    url = postgres_url()
    assert url is not None
    for _ in range(5):  # the race needs the statements to overlap: try a few fresh schemas
        schema = claim_schema(url, prefix="race")
        dbs = [Database(url, schema=schema) for _ in range(4)]
        try:
            await asyncio.gather(*(db.start() for db in dbs))
            assert await dbs[0].fetch("SELECT version FROM schema_migrations")
        finally:
            for db in dbs:
                await db.aclose()


@needs_postgres
async def test_check_mode_refuses_an_unmigrated_schema(tmp_path: Path) -> None:
    url = postgres_url()
    assert url is not None
    async with scratch_schema(url) as schema:
        unmigrated = open_state(_config(url, schema, migrate="check"), tmp_path)  # type: ignore[arg-type]
        with pytest.raises(StateUnavailable, match="chorus state migrate"):
            await unmigrated.start()
        migrating = open_state(_config(url, schema), tmp_path)  # type: ignore[arg-type]  # "auto" migrates
        await migrating.start()
        await migrating.aclose()
        checked = open_state(_config(url, schema, migrate="check"), tmp_path)  # type: ignore[arg-type]
        await checked.start()
        await checked.aclose()


async def test_an_unreachable_server_is_a_503_not_a_crash() -> None:
    db = Database("postgresql://postgres@127.0.0.1:9/test", schema="chorus", timeout=2)
    with pytest.raises(StateUnavailable) as info:
        await db.start()
    assert info.value.status_code == 503 and "127.0.0.1:9" in info.value.message


class Cuttable:
    """A TCP relay to PostgreSQL on loopback that a test can cut and restore (an outage without
    stopping the real server)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()  # same port


@needs_postgres
async def test_an_outage_fails_requests_cleanly_and_recovers_by_itself(tmp_path: Path) -> None:
    url = postgres_url()
    assert url is not None
    relay = Cuttable(5432 if "5432" in url else int(url.rsplit(":", 1)[1].split("/")[0]))
    await relay.start()
    relayed = url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    async with scratch_schema(url) as schema:
        state = open_state(_config(relayed, schema, connect_timeout=2, command_timeout=5), tmp_path)  # type: ignore[arg-type]
        await state.start()
        try:
            await state.catalog.create_store("acme", "docs", {})
            await relay.cut()
            with pytest.raises(StateUnavailable) as info:
                await state.catalog.list_stores("acme")
            assert info.value.status_code == 503 and info.value.code == "state_unavailable"
            await relay.restore()
            for _ in range(50):  # the pool replaces its broken connections on its own
                try:
                    stores = await state.catalog.list_stores("acme")
                    break
                except StateUnavailable:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the state store did not recover after the server came back")
            assert [s.name for s in stores] == ["docs"]
        finally:
            await state.aclose()
            await relay.cut()


@needs_postgres
async def test_chorus_state_migrate_and_status(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = postgres_url()
    assert url is not None
    async with scratch_schema(url) as schema:
        config = tmp_path / "chorus.toml"
        config.write_text(f'[state]\nurl = "{url}"\nschema = "{schema}"\n')

        def chorus(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "chorus.cli", "state", *argv, "--config", str(config)],
                                  capture_output=True, text=True, timeout=60, check=False)

        every = [v for v, _, _ in MIGRATIONS]
        before = chorus("status")
        assert before.returncode == 1 and f"pending migrations {every}" in before.stdout
        assert f"applied migrations {every}" in chorus("migrate").stdout
        assert "up to date" in chorus("migrate").stdout
        after = chorus("status")
        assert after.returncode == 0 and "up to date" in after.stdout


def test_chorus_state_on_the_embedded_default(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "chorus.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    done = subprocess.run([sys.executable, "-m", "chorus.cli", "state", "migrate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "embedded SQLite" in done.stdout and "nothing to migrate" in done.stdout


@needs_postgres
def test_requests_that_need_no_state_keep_working_while_postgresql_is_down(tmp_path: Path) -> None:
    """The hot path touches no database unless the request needs stored data: with the state
    server cut off, plain and bot requests are answered and a Files request is a clean 503."""
    import openai

    from chorus.testing.config import ACME_KEY, make_config, state_table
    from chorus.testing.gateway import serve
    from chorus.testing.upstream import Reply, ScriptedUpstream

    url = postgres_url()
    assert url is not None
    loop = asyncio.new_event_loop()
    relay = Cuttable(int(url.rsplit(":", 1)[1].split("/")[0]))
    thread = __import__("threading").Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(relay.start(), loop).result(10)
    relayed = url.replace(url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{relay.port}")
    upstream = ScriptedUpstream()
    upstream.start()
    try:
        extra = state_table(url=relayed).replace("allow_local_vector_store = true", "allow_local_vector_store = true\nconnect_timeout = 2")
        with serve(make_config(upstream.base_url, extra, data_dir=str(tmp_path))) as server, \
                server.openai_client(ACME_KEY) as client:
            client.files.create(file=("a.txt", b"kept"), purpose="assistants")
            asyncio.run_coroutine_threadsafe(relay.cut(), loop).result(10)
            upstream.push(Reply(content="plain"), Reply(content="bot"))
            plain = client.chat.completions.create(model="model/name=up/gpt-test",
                                                   messages=[{"role": "user", "content": "hi"}])
            bot = client.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "hi"}])
            assert (plain.choices[0].message.content, bot.choices[0].message.content) == ("plain", "bot")
            with pytest.raises(openai.InternalServerError) as info:
                client.files.list()
            assert info.value.status_code == 503 and info.value.body["code"] == "state_unavailable"  # type: ignore[index]
            asyncio.run_coroutine_threadsafe(relay.restore(), loop).result(10)
            for _ in range(50):
                try:
                    assert [f.filename for f in client.files.list()] == ["a.txt"]
                    break
                except openai.InternalServerError:
                    __import__("time").sleep(0.1)
            else:
                pytest.fail("the Files API did not recover after the state server came back")
    finally:
        upstream.stop()
        asyncio.run_coroutine_threadsafe(relay.cut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_shared_state_refuses_the_local_vector_store(tmp_path: Path) -> None:
    """No silent split brain: with [state] url, chunks may not stay in one instance's data dir."""
    from chorus.contract.errors import ConfigError
    from chorus.runtime.services import Services

    config = parse_config({"data_dir": str(tmp_path), "state": {"url": "postgresql://postgres@127.0.0.1:9/test"}})
    with pytest.raises(ConfigError, match="allow_local_vector_store") as refused:
        Services(config)
    message = str(refused.value)  # it names the shared stores there are, each with its url
    assert 'driver = "pgvector" with a url' in message and 'driver = "qdrant" with a url' in message
    allowed = parse_config({"data_dir": str(tmp_path),
                            "state": {"url": "postgresql://postgres@127.0.0.1:9/test", "allow_local_vector_store": True}})
    assert Services(allowed).state.shared
