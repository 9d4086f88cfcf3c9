"""Data shapes shared by parsing, chunking, vector store drivers and retrieval."""

from __future__ import annotations

from typing import Any

import msgspec


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """A structural block of a parsed document: its heading path and text."""

    headings: list[str] = []   # e.g. ["Install", "Linux"]; empty before the first heading
    text: str
    kind: str = "text"          # "text", "table", "code", "row" (JSON/CSV records)


class ParsedDocument(msgspec.Struct, frozen=True, kw_only=True):
    """A file turned into structured text. ``url`` is the document's own URL when it declares one."""

    title: str = ""
    url: str = ""
    sections: list[Section] = []
    metadata: dict[str, Any] = {}


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """One retrievable piece of a file in a dataset (a vector store in the API).

    ``id`` is stable for a given file content: ``"<file_id>:<index>"``. ``start``/``end`` are
    character offsets into the concatenated section text of the parsed document.
    """

    id: str
    workspace: str
    dataset: str
    file_id: str
    index: int
    text: str
    title: str = ""
    headings: list[str] = []
    url: str = ""
    source: str = ""            # the file name as uploaded or the path relative to the source root
    start: int = 0
    end: int = 0
    attributes: dict[str, Any] = {}   # filterable metadata (OpenAI vector store file attributes)
    vector: list[float] | None = None


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk and its relevance score (higher is better; scale depends on the ranking)."""

    chunk: Chunk
    score: float
