"""``[vector_store]`` settings of the ``sqlite`` driver."""

from __future__ import annotations

from chorus.vectorstores import VectorStoreSettings


class SqliteVectorStoreSettings(VectorStoreSettings):
    """``[vector_store]`` keys of the ``sqlite`` driver."""

    path: str | None = None                 # default <data_dir>/knowledge.sqlite3; relative to data_dir
    dense: bool = True                      # store vectors and use them for hybrid search
    rrf_k: int = 60                         # reciprocal rank fusion constant
    candidates: int = 50                    # depth of each ranking fused by RRF
    match_budget: int = 3000                # ~max chunks BM25 scores per query; 0 = always exact
    small_corpus_chunks: int = 1000         # workspaces this small: every term scored, with a positive IDF
    title_weight: float = 2.0               # BM25 column weights (text is 1.0)
    headings_weight: float = 1.5
    readers: int = 4                        # reader connections (and threads)
    busy_timeout: float = 30.0              # seconds a writer waits for another process's lock
    dense_cache_mb: int = 1024              # memory for dense matrices, least recently used evicted
    tokenizer: str = "porter unicode61 remove_diacritics 2"  # FTS5 tokenizer, used when the file is created
