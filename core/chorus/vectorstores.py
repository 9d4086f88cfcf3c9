"""Public import path. The vector store driver interface (entry point group ``chorus.vector_stores``) and the chunks it stores.

The definitions live in :mod:`chorus.contract.vectorstores`; plugins import them from here."""

from chorus.contract.documents import Chunk, SearchHit
from chorus.contract.vectorstores import (
    VectorStoreDriver,
    VectorStoreSettings,
)

__all__ = ['Chunk', 'SearchHit', 'VectorStoreDriver', 'VectorStoreSettings']
