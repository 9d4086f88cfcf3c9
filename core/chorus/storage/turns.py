"""Parked agent turns: where hidden server-side steps wait while the client runs its own tools.

(The resume logic that reads them is :mod:`chorus.runtime.resume`.)

When a turn ends with client tool calls after (or beside) server tool calls, the client sees only
its calls. The hidden messages are parked, keyed by ``(workspace, client tool call id)``, and
restored when the client sends the results back, so the model sees the whole story.

Two stores, chosen by ``[server] parked_turns``:

* ``"sqlite"`` (the default): a SQLite file in the data directory, shared by every worker of
  ``chorus serve --workers N`` and kept across restarts, so a resume may land on any worker.
* ``"memory"``: a dict in the process; resumes must reach the same process before it restarts.

Entries expire after ``ttl`` seconds; a store holds at most ``max_entries`` call ids (the ones
closest to expiry are dropped first). A take does not remove its entry: a client may retry the
resume. A SQLite error never fails the request: it is logged, and the turn goes on without the
parked steps (the answer is still sent; a resume then sees only the client's copy).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path

import msgspec

from chorus.contract.schemas import Message
from chorus.storage.sqlitedb import SqliteThread, immediate

log = logging.getLogger("chorus.turns")


class ParkedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """What replaces the client's copy of the assistant message on resume."""

    hidden: list[Message]
    assistant: Message
    results: list[Message]

    def restore(self) -> list[Message]:
        """Hidden steps, the full assistant message, then the server tool results."""
        return [*self.hidden, self.assistant, *self.results]


class TurnStore:
    """Where parked turns live. Subclasses implement :meth:`park` and :meth:`take_many`."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries

    async def start(self) -> None:
        """Open what the store needs (called on app startup)."""

    async def aclose(self) -> None:
        """Release it (called on app shutdown)."""

    async def park(self, workspace: str, call_ids: list[str], turn: ParkedTurn) -> None:
        """Keep ``turn`` under every client call id of it; it is readable once this returns."""
        raise NotImplementedError

    async def take_many(self, workspace: str, call_ids: list[str]) -> dict[str, ParkedTurn]:
        """The unexpired parked turns of this workspace among ``call_ids``, by call id."""
        raise NotImplementedError


class MemoryTurnStore(TurnStore):
    """An in-process, bounded, expiring map from client tool call ids to parked turns."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 10_000) -> None:
        super().__init__(ttl, max_entries)
        self._entries: OrderedDict[tuple[str, str], tuple[float, ParkedTurn]] = OrderedDict()

    async def park(self, workspace: str, call_ids: list[str], turn: ParkedTurn) -> None:
        expires = time.monotonic() + self.ttl
        for call_id in call_ids:
            self._entries[(workspace, call_id)] = (expires, turn)
            self._entries.move_to_end((workspace, call_id))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def take_many(self, workspace: str, call_ids: list[str]) -> dict[str, ParkedTurn]:
        found: dict[str, ParkedTurn] = {}
        now = time.monotonic()
        for call_id in call_ids:
            entry = self._entries.get((workspace, call_id))
            if entry is None:
                continue
            if entry[0] < now:
                del self._entries[(workspace, call_id)]
            else:
                found[call_id] = entry[1]
        return found

    def __len__(self) -> int:
        return len(self._entries)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS parked_turns (
    workspace TEXT NOT NULL, call_id TEXT NOT NULL, expires REAL NOT NULL, turn BLOB NOT NULL,
    PRIMARY KEY (workspace, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parked_turns_expiry ON parked_turns (expires);
"""


class SqliteTurnStore(TurnStore):
    """Parked turns in a SQLite file (WAL), shared by every process that opens the same path.

    All SQLite work runs on one worker thread with one connection; expiry uses wall-clock time
    so processes agree on it. Expired rows, and the rows over ``max_entries``, are removed every
    ``prune_every`` parks.
    """

    prune_every = 64

    def __init__(self, path: Path, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        super().__init__(ttl, max_entries)
        self.path = path
        self._sqlite = SqliteThread("the parked-turn store", thread_name="chorus-turns")
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(ParkedTurn).decode
        self._parks = 0

    async def start(self) -> None:
        await self._sqlite.open(self.path, lambda db: db.executescript(_SCHEMA))

    async def aclose(self) -> None:
        await self._sqlite.close()

    async def park(self, workspace: str, call_ids: list[str], turn: ParkedTurn) -> None:
        blob = self._encode(turn)
        expires = time.time() + self.ttl
        self._parks += 1
        prune = self._parks % self.prune_every == 0

        def write(db: sqlite3.Connection) -> None:
            with immediate(db):
                db.executemany(
                    "INSERT OR REPLACE INTO parked_turns (workspace, call_id, expires, turn) VALUES (?, ?, ?, ?)",
                    [(workspace, call_id, expires, blob) for call_id in call_ids],
                )
                if prune:
                    self._prune(db)

        try:
            await self._sqlite.run(write)
        except sqlite3.Error as exc:  # the answer still goes out; its resume will lack the hidden steps
            log.error("parked turn of workspace %s not stored in %s: %s", workspace, self.path, exc)

    def _prune(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM parked_turns WHERE expires < ?", (time.time(),))
        (count,) = db.execute("SELECT count(*) FROM parked_turns").fetchone()
        if count > self.max_entries:
            db.execute(
                "DELETE FROM parked_turns WHERE (workspace, call_id) IN "
                "(SELECT workspace, call_id FROM parked_turns ORDER BY expires LIMIT ?)",
                (count - self.max_entries,),
            )

    async def take_many(self, workspace: str, call_ids: list[str]) -> dict[str, ParkedTurn]:
        def read(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows: list[tuple[str, bytes]] = []
            now = time.time()
            for start in range(0, len(call_ids), 500):  # under SQLite's limit on bound parameters
                batch = call_ids[start:start + 500]
                rows += db.execute(
                    "SELECT call_id, turn FROM parked_turns WHERE workspace = ? AND expires >= ? "
                    f"AND call_id IN ({','.join('?' * len(batch))})",
                    (workspace, now, *batch),
                ).fetchall()
            return rows

        try:
            rows = await self._sqlite.run(read)
        except sqlite3.Error as exc:  # serve the request with the client's copy of the history
            log.error("parked turns of workspace %s not read from %s: %s", workspace, self.path, exc)
            return {}
        return {call_id: self._decode(blob) for call_id, blob in rows}
