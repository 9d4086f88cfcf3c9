"""Chorus vector store driver ``qdrant``: chunks in a Qdrant collection (embedded or a server).

Registered under the entry point group ``chorus.vector_stores``; select it with
``[vector_store] driver = "qdrant"``. See the package README for settings and guarantees.
"""

from chorus_vectorstore_qdrant.driver import QdrantVectorStore
from chorus_vectorstore_qdrant.settings import QdrantVectorStoreSettings

__all__ = ["QdrantVectorStore", "QdrantVectorStoreSettings", "__version__"]
__version__ = "0.1.0"
