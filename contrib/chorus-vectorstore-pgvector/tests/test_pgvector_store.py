"""The ``pgvector`` driver on a real PostgreSQL with pgvector: the conformance kit, plus settings,
schema and migrations, per-workspace statistics, BM25 values, HNSW use and the error paths."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import msgspec
import pytest

pytest.importorskip("chorus_vectorstore_pgvector", reason="chorus-vectorstore-pgvector is not installed")

from chorus_vectorstore_pgvector import PgvectorStore, PgvectorStoreSettings
from pgvector_testing import Conformance, PgvectorFactory, settings

from chorus.testing.vectorstores import CHECKS, SCORING_CHECKS, Check


@pytest.mark.parametrize("check", CHECKS + SCORING_CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: Check, make_store: PgvectorFactory) -> None:
    await check(Conformance(make_store))


def test_registered_as_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="chorus.vector_stores") if e.name == "pgvector"]
    assert ep.load() is PgvectorStore
    assert PgvectorStore.settings_type is PgvectorStoreSettings


@pytest.mark.parametrize("raw", [
    {},                                               # url is required
    {"url": "http://db:5432/x"},
    {"url": "postgresql://db/x", "schema": "bad name"},
    {"url": "postgresql://db/x", "schema": 'x"; DROP TABLE y; --'},
    {"url": "postgresql://db/x", "text_search_config": "english; DROP"},
    {"url": "postgresql://db/x", "hnsw_ef_search": 0},
    {"url": "postgresql://db/x", "hnsw_ef_search": 1001},
    {"url": "postgresql://db/x", "pool_min_size": 5, "pool_max_size": 2},
    {"url": "postgresql://db/x", "bm25_b": 2.0},
    {"url": "postgresql://db/x", "rrf_k": -1},
    {"url": "postgresql://db/x", "unknown_key": 1},
])
def test_invalid_settings(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        settings(**raw)


def test_url_is_a_secret() -> None:
    s = settings(url="postgresql://chorus:pg-secret-value@db:5432/x")
    assert s.url.get().endswith("@db:5432/x") and "pg-secret-value" not in repr(s)
    assert "pg-secret-value" not in PgvectorStore(s, __import__("pathlib").Path(".")).where
