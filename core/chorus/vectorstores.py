"""Public import path. The vector store driver interface (entry point group ``chorus.vector_stores``) and the chunks it stores.

The definitions live in :mod:`chorus.contract.vectorstores`; plugins import them from here."""

from chorus.contract.vectorstores import (  # noqa: F401 - re-exported
    VectorStoreDriver,
    VectorStoreSettings,
)
from chorus.contract.documents import Chunk, SearchHit  # noqa: F401 - re-exported

__all__ = ['Chunk', 'SearchHit', 'VectorStoreDriver', 'VectorStoreSettings']
