"""What the driver stores in its collection: point ids, payloads, generations.

Three kinds of point share one collection, told apart by the ``kind`` payload field:

* ``chunk``: one per chunk and *write* of its file, with the chunk's fields (``workspace``,
  ``dataset``, ``file_id``, ``idx``, ``chunk_id``, ``text``, ``title``, ``headings``, ``url``,
  ``source``, ``start``, ``end``, ``attributes``) and the write's ``generation`` and ``write`` id;
  it carries the sparse (``lexical``) vector and, when the chunk has one, the dense (``dense``)
  vector;
* ``file``: one per (workspace, dataset, file), no vectors: the ``generation`` and ``write`` of the
  file's current chunks, their ``count``, and ``deleted`` (a tombstone). Only chunks of the current
  write of a live record are ever returned;
* ``meta``: one per collection, the lexical analyzer's signature.

A *generation* orders the writes of a file (a newer write has a larger one); the *write* id (random)
tells apart two writes that drew the same generation. Generations stay below 2**53 because Qdrant
compares numbers as doubles.

Ids are UUIDv5 of the JSON of their identifying fields, so they are deterministic and a point of
one workspace can never be addressed through another's names.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from chorus.vectorstores import Chunk

NAMESPACE = uuid.UUID("0b6f5a8e-4a4f-5f43-9d0e-63686f727573")
CHUNK, FILE, META = "chunk", "file", "meta"


def _uuid(*parts: str | int) -> str:
    return str(uuid.uuid5(NAMESPACE, json.dumps(parts, ensure_ascii=False)))


def chunk_id(workspace: str, dataset: str, file_id: str, write: str, index: int) -> str:
    """The point id of chunk ``index`` of one write of a file."""
    return _uuid(CHUNK, workspace, dataset, file_id, write, index)


def record_id(workspace: str, dataset: str, file_id: str) -> str:
    """The point id of a file's record."""
    return _uuid(FILE, workspace, dataset, file_id)


META_ID = _uuid(META)


def new_write() -> str:
    """A fresh, random write id."""
    return uuid.uuid4().hex


class Generations:
    """Generation numbers: the wall clock in microseconds, strictly increasing in this process and
    always above a given floor (the current record's), so a newer write of a file outranks the one it
    replaces whatever the hosts' clocks say."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self, floor: int = 0) -> int:
        candidate = time.time_ns() // 1000
        with self._lock:
            self._last = max(candidate, self._last + 1, floor + 1)
            return self._last


@dataclass(frozen=True)
class FileRecord:
    """A file's current write; ``deleted`` records are tombstones (count 0)."""

    generation: int
    write: str
    count: int
    deleted: bool

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | None) -> FileRecord | None:
        if not payload or payload.get("kind") != FILE:
            return None
        return cls(int(payload["generation"]), str(payload["write"]), int(payload.get("count", 0)),
                   bool(payload.get("deleted", False)))

    def shows(self, payload: dict[str, Any]) -> bool:
        """Whether a chunk point with ``payload`` is visible under this record."""
        return not self.deleted and payload.get("write") == self.write


def record_payload(workspace: str, dataset: str, file_id: str, record: FileRecord) -> dict[str, Any]:
    return {"kind": FILE, "workspace": workspace, "dataset": dataset, "file_id": file_id,
            "generation": record.generation, "write": record.write, "count": record.count, "deleted": record.deleted}


def chunk_payload(chunk: Chunk, generation: int, write: str) -> dict[str, Any]:
    return {
        "kind": CHUNK, "workspace": chunk.workspace, "dataset": chunk.dataset, "file_id": chunk.file_id,
        "generation": generation, "write": write, "idx": chunk.index, "chunk_id": chunk.id, "text": chunk.text,
        "title": chunk.title, "headings": list(chunk.headings), "url": chunk.url, "source": chunk.source,
        "start": chunk.start, "end": chunk.end, "attributes": dict(chunk.attributes),
    }


def chunk_from_payload(payload: dict[str, Any]) -> Chunk:
    """The chunk a ``chunk`` point stores (without its vector)."""
    return Chunk(
        id=payload["chunk_id"], workspace=payload["workspace"], dataset=payload["dataset"],
        file_id=payload["file_id"], index=int(payload["idx"]), text=payload["text"], title=payload["title"],
        headings=list(payload["headings"]), url=payload["url"], source=payload["source"],
        start=int(payload["start"]), end=int(payload["end"]), attributes=dict(payload["attributes"]),
    )
