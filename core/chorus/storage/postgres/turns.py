"""Parked agent turns in PostgreSQL: a resume may reach any instance of the deployment.

Same contract as the SQLite store: wall-clock expiry, bounded size (pruned every ``prune_every``
parks), and a database error never fails the request (it is logged; the answer still goes out and
its resume sees only the client's copy of the history).
"""

from __future__ import annotations

import logging
import time

import asyncpg
import msgspec

from chorus.contract.errors import StateUnavailable
from chorus.storage.postgres.database import Database
from chorus.storage.turns import ParkedTurn, TurnStore

log = logging.getLogger("chorus.turns")


class PgTurnStore(TurnStore):
    """Parked turns in the deployment's PostgreSQL schema."""

    prune_every = 64

    def __init__(self, db: Database, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        super().__init__(ttl, max_entries)
        self.db = db
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(ParkedTurn).decode
        self._parks = 0

    async def park(self, workspace: str, call_ids: list[str], turn: ParkedTurn) -> None:
        blob = self._encode(turn)
        expires = time.time() + self.ttl
        self._parks += 1
        prune = self._parks % self.prune_every == 0

        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO parked_turns (workspace, call_id, expires, turn) VALUES ($1,$2,$3,$4) "
                    "ON CONFLICT (workspace, call_id) DO UPDATE SET expires=excluded.expires, turn=excluded.turn",
                    [(workspace, call_id, expires, blob) for call_id in call_ids])
                if prune:
                    await conn.execute("DELETE FROM parked_turns WHERE expires < $1", time.time())
                    await conn.execute(
                        "DELETE FROM parked_turns WHERE (workspace, call_id) IN (SELECT workspace, call_id FROM "
                        "parked_turns ORDER BY expires DESC OFFSET $1)", self.max_entries)

        try:
            await self.db.run(write)
        except (StateUnavailable, asyncpg.PostgresError) as exc:
            log.error("parked turn of workspace %s not stored: %s", workspace, exc)

    async def take_many(self, workspace: str, call_ids: list[str]) -> dict[str, ParkedTurn]:
        try:
            rows = await self.db.fetch(
                "SELECT call_id, turn FROM parked_turns WHERE workspace=$1 AND expires >= $2 AND call_id = ANY($3::text[])",
                workspace, time.time(), call_ids)
        except (StateUnavailable, asyncpg.PostgresError) as exc:
            log.error("parked turns of workspace %s not read: %s", workspace, exc)
            return {}
        return {r["call_id"]: self._decode(r["turn"]) for r in rows}
