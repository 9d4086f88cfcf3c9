"""``[vector_store]`` keys of the ``pgvector`` driver."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from chorus.secrets import Secret
from chorus.vectorstores import VectorStoreSettings

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
#: A schema name as it reaches DDL (quoted there as well).
SCHEMA_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
#: A text search configuration name, optionally schema-qualified (``english``, ``public.my_config``).
_TS_CONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")


class PgvectorStoreSettings(VectorStoreSettings, kw_only=True):
    """Where the chunks live, how they are indexed and ranked, and the connection pool.

    Keys marked *index* shape what is written: ``text_search_config`` is recorded in the schema and a
    different one is refused at start; the weights and HNSW build parameters apply to what is
    written (or indexes created) after a change.
    """

    # where
    url: Secret                                  # postgresql://user:password@host:5432/db (required)
    schema: Annotated[str, msgspec.Meta(pattern=SCHEMA_PATTERN)] = "chorus_vectors"
    # connection pool
    pool_min_size: NonNegative = 1
    pool_max_size: Positive = 10
    connect_timeout: PositiveFloat = 10.0        # seconds to connect or to wait for a pooled connection
    command_timeout: PositiveFloat = 60.0        # seconds per statement
    # lexical
    text_search_config: str = "english"          # index: PostgreSQL text search configuration (stemming, stop words)
    bm25_k1: Annotated[float, msgspec.Meta(ge=0)] = 1.2
    bm25_b: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.75
    title_weight: Annotated[float, msgspec.Meta(ge=0)] = 2.0    # index
    headings_weight: Annotated[float, msgspec.Meta(ge=0)] = 1.5  # index
    match_budget: NonNegative = 3000             # ~max chunks BM25 scores per query; 0 = always exact
    # dense
    dense: bool = True                           # store chunk vectors and use them for hybrid search
    hnsw_m: Annotated[int, msgspec.Meta(ge=2, le=100)] = 16                 # index
    hnsw_ef_construction: Annotated[int, msgspec.Meta(ge=4, le=1000)] = 64  # index
    hnsw_ef_search: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 400       # per query (SET LOCAL)
    # fusion
    rrf_k: NonNegative = 60
    candidates: Positive = 50                    # depth of each ranking fused by RRF

    def __post_init__(self) -> None:
        if not re.match(r"postgres(ql)?://", self.url.get()):
            raise ValueError("`url` must be a postgresql:// URL")
        if not _TS_CONFIG.fullmatch(self.text_search_config):
            raise ValueError("`text_search_config` must be a text search configuration name such as \"english\"")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("`pool_min_size` must not exceed `pool_max_size`")
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ValueError("`hnsw_ef_construction` must be at least twice `hnsw_m`")
