"""``[vector_store]`` keys of the ``qdrant`` driver.

Where the data lives is exactly one of: ``url`` (a Qdrant server or cluster; ``api_key`` is a
:class:`~chorus.secrets.Secret`), ``path`` (embedded local mode persisted in a directory, relative
to the data directory) or ``location = ":memory:"`` (embedded, in memory). With none of them the
store is embedded in ``<data_dir>/qdrant``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
import snowballstemmer

from chorus.secrets import Secret
from chorus.vectorstores import VectorStoreSettings

Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
_COLLECTION = re.compile(r"[A-Za-z0-9_-]{1,128}")


class QdrantVectorStoreSettings(VectorStoreSettings):
    """Connection, collection layout and ranking parameters.

    Keys marked *index* shape what is stored: ``stemmer`` is recorded in the collection and a
    mismatch is refused at start; changing the BM25 or field-weight keys only affects chunks written
    afterwards (re-ingest to apply them everywhere).
    """

    # where
    url: str | None = None                  # http(s)://host:6333 of a server or cluster
    api_key: Secret | None = None
    path: str | None = None                 # embedded, persisted; relative to data_dir
    location: Literal[":memory:"] | None = None  # an embedded, non-persistent store
    prefer_grpc: bool = False
    timeout: PositiveFloat = 30.0           # seconds per request to a server
    threads: Positive = 8                   # worker threads for server requests (embedded: always 1)
    read_consistency: Positive | Literal["majority", "quorum", "all"] | None = None  # replicated clusters
    # collection
    collection: str = "chorus_chunks"
    dense: bool = True                      # store chunk vectors and use them for hybrid search
    dimension: Positive | None = None       # dense size; default: the first vectors written
    shard_number: Positive | None = None    # used when the collection is created (server only)
    replication_factor: Positive | None = None
    batch_size: Positive = 256              # points per upsert request
    # ranking
    rrf_k: Annotated[int, msgspec.Meta(ge=0)] = 60
    candidates: Positive = 50               # depth of each ranking fused by RRF
    idf: Literal["collection", "workspace"] = "collection"  # population of the IDF statistics
    stemmer: str = "english"                # index: a Snowball language, or "" for none
    bm25_k1: Annotated[float, msgspec.Meta(ge=0)] = 1.2       # index
    bm25_b: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.75  # index
    bm25_avg_len: PositiveFloat = 200.0     # index: typical chunk length in (weighted) tokens
    title_weight: Annotated[float, msgspec.Meta(ge=0)] = 2.0   # index
    headings_weight: Annotated[float, msgspec.Meta(ge=0)] = 1.5  # index

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.url, self.path, self.location)) > 1:
            raise ValueError("set at most one of `url`, `path` and `location`")
        if self.api_key is not None and self.url is None:
            raise ValueError("`api_key` applies to `url` only")
        if self.url is not None and not re.match(r"https?://[^/\s]+", self.url):
            raise ValueError("`url` must be an http:// or https:// URL")
        if not _COLLECTION.fullmatch(self.collection):
            raise ValueError("`collection` may contain only letters, digits, `_` and `-` (1-128)")
        if self.stemmer and self.stemmer not in snowballstemmer.algorithms():
            raise ValueError(f"`stemmer` must be \"\" or one of {', '.join(snowballstemmer.algorithms())}")

    @property
    def embedded(self) -> bool:
        """Whether Qdrant runs in this process (local mode) rather than as a server."""
        return self.url is None
