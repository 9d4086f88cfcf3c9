"""Helpers shared by the ``pgvector`` driver tests (imported by name: the tests folder is on sys.path).

Chunk builders and the conformance checks come from :mod:`chorus.testing.vectorstores`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from chorus_vectorstore_pgvector import PgvectorStore, PgvectorStoreSettings

from chorus.secrets import dec_hook
from chorus.testing.vectorstores import DriverFactory

#: ``make_store(*, start=True, **raw)``: a driver from raw ``[vector_store]`` settings (conftest.py).
PgvectorFactory = DriverFactory[PgvectorStore]


class Conformance:
    """The kit's ``StoreFactory`` over ``make_store``: fresh data is a new schema, ``data="name"``
    the schema of that name (so a store made again sees what the first wrote). Remembers the stores."""

    def __init__(self, make_store: PgvectorFactory, **raw: Any) -> None:
        self.make_store = make_store
        self.raw = raw
        self.made: list[PgvectorStore] = []
        self.fresh = 0

    async def __call__(self, *, data: str | None = None, dense: bool = True, start: bool = True) -> PgvectorStore:
        prefix = getattr(self.make_store, "prefix", "t")
        if data is None:
            self.fresh += 1
            data = f"fresh{self.fresh}"
        store = await self.make_store(start=start, **{**self.raw, "dense": dense, "schema": f"{prefix}_{data}"})
        self.made.append(store)
        return store


def settings(**raw: Any) -> PgvectorStoreSettings:
    """Settings as a ``[vector_store]`` table would give them (validated the same way)."""
    return msgspec.convert({"driver": "pgvector", **raw}, PgvectorStoreSettings, dec_hook=dec_hook)
