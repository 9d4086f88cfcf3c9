"""Public import path. Documents: parsing files into text with structure, and chunking them.

``parse`` reads text, Markdown, HTML, PDF, JSON/JSONL/CSV/TSV (a :class:`ParseError` names the
reason); ``chunk_document`` cuts a parsed document into structure-aware, overlapping chunks with
exact offsets; ``document_text`` is a parsed document's plain text. The definitions live in
:mod:`chorus.contract.documents` (types) and :mod:`chorus.runtime.knowledge` (parsing, chunking).
"""

from chorus.contract.documents import Chunk, ParsedDocument, SearchHit, Section
from chorus.runtime.knowledge.chunking import chunk_document, document_text
from chorus.runtime.knowledge.parsing import ParseError, parse

__all__ = ["Chunk", "ParseError", "ParsedDocument", "SearchHit", "Section", "chunk_document", "document_text", "parse"]
