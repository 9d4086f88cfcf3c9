"""Built-in vector store ``sqlite``: one SQLite file, FTS5/BM25 lexical search, dense vectors, RRF.

Storage (``<data_dir>/knowledge.sqlite3`` unless ``path`` is set), in WAL mode:

* ``chunks``: one row per chunk, keyed by ``(workspace, dataset, file_id, idx)``; ids only grow;
* ``chunks_fts_<n>``: one external-content FTS5 index per workspace (``lexical_indexes`` maps
  workspaces to ``n``) over ``text``, ``title`` and ``headings``, kept in step by the write path
  in the same transaction; ranked with ``bm25()`` using per-column weights, so a tenant's BM25
  statistics never include another tenant's chunks (version-1 files, with one shared index, are
  migrated when opened);
* ``store_meta``: the tokenizer the file's indexes were created with;
* ``chunk_vectors``: each chunk's embedding as little-endian float32, when it has one;
* ``datasets`` and ``deletions``: a version per ``(workspace, dataset)``, bumped by every write,
  and the id ranges each version deleted. The in-memory dense index (unit-norm numpy matrices per
  dataset and dimension) uses them to refresh incrementally, also after other processes' writes.

Contracts:

* Every statement filters by workspace in SQL; the dense index is keyed by workspace too.
* :meth:`SqliteVectorStore.replace_file` runs ``BEGIN IMMEDIATE``, deletes the file's rows,
  inserts the new ones and commits; any error rolls back, and a crash leaves the last commit.
* Query text is never FTS5 syntax: it is cut into word tokens, each quoted, and OR-ed, so BM25
  favours chunks that match more (and rarer) terms. When the terms' document frequencies exceed
  ``match_budget``, scoring is restricted to chunks containing the rarest terms (still exact BM25
  over all informative terms for those chunks); see :func:`plan_query`.
* Scores: lexical only, ``-bm25`` (higher is better); dense only, cosine similarity; both, the
  reciprocal rank fusion ``sum(1 / (rrf_k + rank))``. Hits carry no vector.
* Filters use the OpenAI vector store filter shape over ``attributes``, compiled to parameterised
  ``json_extract`` SQL (:func:`compile_filter`); a malformed filter is an ``InvalidRequest``.
* SQLite and numpy work runs in worker threads: one writer connection on a one-thread executor,
  and a pool of reader connections, one per reader thread; the event loop never blocks on them.

Dense search is exact (brute force) with numpy; sqlite-vec cannot be loaded by interpreters whose
``sqlite3`` lacks ``enable_load_extension`` and was slower here (see "Knowledge retrieval" in ``docs/benchmarks.md``).
Without numpy installed, vectors are stored but searches are lexical only.
"""

from chorus_plugins.sqlite_store.dense import MAX_SEGMENTS
from chorus_plugins.sqlite_store.driver import SqliteVectorStore
from chorus_plugins.sqlite_store.lexical import MAX_QUERY_TERMS, plan_query, query_terms
from chorus_plugins.sqlite_store.settings import SqliteVectorStoreSettings

__all__ = [
    "MAX_QUERY_TERMS", "MAX_SEGMENTS", "SqliteVectorStore", "SqliteVectorStoreSettings", "plan_query", "query_terms",
]
