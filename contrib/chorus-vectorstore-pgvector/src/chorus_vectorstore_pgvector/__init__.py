"""Chorus vector store driver ``pgvector``: chunks in PostgreSQL, full-text BM25 + pgvector, fused by RRF.

Registered under the entry point group ``chorus.vector_stores``; select it with
``[vector_store] driver = "pgvector"`` and a ``url``. See the package README for settings,
scoring and guarantees.
"""

from chorus_vectorstore_pgvector.driver import PgvectorStore
from chorus_vectorstore_pgvector.settings import PgvectorStoreSettings

__all__ = ["PgvectorStore", "PgvectorStoreSettings", "__version__"]
__version__ = "0.1.0"
