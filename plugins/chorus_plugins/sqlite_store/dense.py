"""Dense index of the ``sqlite`` store: packed vectors, unit-norm numpy segments, cached per dataset."""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional; dense search needs it
    np = None  # type: ignore[assignment]  # mypy types np as the module; HAS_NUMPY says whether it is there

#: Whether numpy is installed: without it vectors are stored but searches are lexical only.
HAS_NUMPY: bool = np is not None


def _pack(vector: Sequence[float]) -> bytes:
    packed = array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        packed.byteswap()
    return packed.tobytes()


def _similarities(matrix: Any, query: Any) -> Any:
    """Dot products of unit rows with a unit query: numpy's own single-threaded loop, not BLAS.

    BLAS sgemv is multi-threaded; on a loaded 2-core host its threads fight the FTS5 thread of the
    same hybrid query and other searches, which measured worse at p95 than one thread per query.
    """
    return np.einsum("ij,j->i", matrix, query)


MAX_SEGMENTS = 8


@dataclass(frozen=True)
class _Segment:
    """Vectors loaded together: ascending row ids, unit-norm float32 rows, which are still alive."""

    rowids: Any                # np.ndarray[int64], shape (n,)
    matrix: Any                # np.ndarray[float32], shape (n, dim)
    alive: Any = None          # np.ndarray[bool], shape (n,); None when every row is
    dead: int = 0

    def kill(self, ranges: Sequence[tuple[int, int]]) -> _Segment:
        """This segment with the rows whose ids fall in any ``(lo, hi)`` range marked dead."""
        alive = np.ones(len(self.rowids), dtype=bool) if self.alive is None else self.alive.copy()
        for lo, hi in ranges:
            alive[np.searchsorted(self.rowids, lo, "left"):np.searchsorted(self.rowids, hi, "right")] = False
        dead = int(len(alive) - np.count_nonzero(alive))
        return _Segment(self.rowids, self.matrix, alive if dead else None, dead)

    def restrict(self, survivors: Any) -> _Segment:
        """This segment with the rows missing from ``survivors`` (sorted ids) marked dead."""
        if not len(self.rowids):
            return self
        at = np.minimum(np.searchsorted(survivors, self.rowids), max(len(survivors) - 1, 0))
        alive = survivors[at] == self.rowids if len(survivors) else np.zeros(len(self.rowids), dtype=bool)
        dead = int(len(alive) - np.count_nonzero(alive))
        return _Segment(self.rowids, self.matrix, alive if dead else None, dead)


def _merge(segments: Sequence[_Segment]) -> _Segment:
    rowids = [s.rowids if s.alive is None else s.rowids[s.alive] for s in segments]
    rows = [s.matrix if s.alive is None else s.matrix[s.alive] for s in segments]
    return _Segment(np.concatenate(rowids), np.concatenate(rows))


@dataclass(frozen=True)
class _DenseEntry:
    """One dataset's vectors by dimension, as of ``version``."""

    version: int
    max_id: int
    groups: dict[int, tuple[_Segment, ...]]

    @property
    def nbytes(self) -> int:
        return sum(s.matrix.nbytes + s.rowids.nbytes for segs in self.groups.values() for s in segs)

    def similarities(self, query: Any) -> tuple[Any, Any] | None:
        """(cosine similarities, row ids) of the live rows of the query's dimension."""
        segments = self.groups.get(query.shape[0])
        if not segments:
            return None
        scores, rowids = [], []
        for seg in segments:
            part = _similarities(seg.matrix, query)
            if seg.alive is not None:
                part, ids = part[seg.alive], seg.rowids[seg.alive]
            else:
                ids = seg.rowids
            scores.append(part)
            rowids.append(ids)
        if len(scores) == 1:
            return scores[0], rowids[0]
        return np.concatenate(scores), np.concatenate(rowids)


def refresh_dense(db: sqlite3.Connection, workspace: str, dataset: str, version: int, logged_after: int,
                  old: _DenseEntry | None) -> _DenseEntry:
    """``old`` brought up to date: rows deleted since are masked, rows added since are loaded.

    Chunk ids only grow (``AUTOINCREMENT``), so new rows are those above ``old.max_id``. Deletions
    are logged as id ranges per version (a file's rows, inserted in one transaction, form one
    range), and masking a range costs two binary searches. When the log no longer reaches back
    to ``old.version`` (``logged_after``), the surviving ids are read instead. All segments are
    merged when a quarter of their rows are dead, the smaller half when there are too many.
    """
    groups: dict[int, list[_Segment]] = {dim: list(segs) for dim, segs in old.groups.items()} if old else {}
    max_id = old.max_id if old else 0
    if old is not None and groups and old.version < logged_after:
        survivors = np.fromiter((r for (r,) in db.execute(
            "SELECT id FROM chunk_vectors WHERE workspace = ? AND dataset = ? AND id <= ? ORDER BY id",
            (workspace, dataset, max_id))), dtype=np.int64)
        groups = {dim: [seg.restrict(survivors) for seg in segs] for dim, segs in groups.items()}
    elif old is not None and groups:
        ranges = db.execute("SELECT lo, hi FROM deletions WHERE workspace = ? AND dataset = ? AND version > ?",
                            (workspace, dataset, old.version)).fetchall()
        if ranges:
            groups = {dim: [seg.kill(ranges) for seg in segs] for dim, segs in groups.items()}
    fresh: dict[int, tuple[list[int], list[bytes]]] = {}
    for rowid, blob in db.execute(
        "SELECT id, vector FROM chunk_vectors WHERE workspace = ? AND dataset = ? AND id > ? ORDER BY id",
        (workspace, dataset, max_id),
    ):
        ids, blobs = fresh.setdefault(len(blob) // 4, ([], []))
        ids.append(rowid)
        blobs.append(blob)
        max_id = rowid
    for dim, (ids, blobs) in fresh.items():
        if dim == 0:
            continue
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), dim).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        matrix /= norms
        groups.setdefault(dim, []).append(_Segment(np.asarray(ids, dtype=np.int64), matrix))
    compacted: dict[int, tuple[_Segment, ...]] = {}
    for dim, segs in groups.items():
        segs = [s for s in segs if s.dead < len(s.rowids)]
        if sum(s.dead for s in segs) * 4 > sum(len(s.rowids) for s in segs):
            segs = [_merge(segs)]
        elif len(segs) > MAX_SEGMENTS:  # merge the smaller half: rows are copied O(log n) times
            segs.sort(key=lambda s: len(s.rowids), reverse=True)
            keep = len(segs) // 2
            segs = [*segs[:keep], _merge(segs[keep:])]
        if segs:
            compacted[dim] = tuple(segs)
    return _DenseEntry(version=version, max_id=max_id, groups=compacted)


def _unit(vector: Sequence[float]) -> Any:
    """``vector`` as a unit float32 array, or ``None`` when it is empty, zero or not finite."""
    query = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(query)) if query.ndim == 1 and query.size else 0.0
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return query / norm


def _best_first(scores: Any, rowids: Any, window: int) -> Any:
    """Indices of the ``window`` highest ``scores``, best first (equal scores: lower rowid first)."""
    top = np.argpartition(-scores, window - 1)[:window] if window < len(scores) else np.arange(len(scores))
    return top[np.lexsort((rowids[top], -scores[top]))]


def _similarity_arrays(entries: Sequence[_DenseEntry], query: Any) -> tuple[Any, Any] | None:
    """(similarities, row ids) over the live rows of ``entries`` with the query's dimension."""
    found = [f for f in (e.similarities(query) for e in entries) if f is not None and len(f[1])]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


class _DenseCache:
    """Per-(workspace, dataset) dense entries, refreshed when the dataset's version moves (LRU by bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _DenseEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def get(self, db: sqlite3.Connection, workspace: str, dataset: str, version: int, logged_after: int) -> _DenseEntry:
        key = (workspace, dataset)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version >= version:
                self._entries.move_to_end(key)
                return entry
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                return entry
            if entry is not None and entry.version > version:
                # another search already refreshed past this snapshot: its extra rows are not
                # visible here and are dropped when filtering or hydrating
                return entry
            entry = refresh_dense(db, workspace, dataset, version, logged_after, entry)
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                used = sum(e.nbytes for e in self._entries.values())
                while used > self.max_bytes and len(self._entries) > 1:
                    _, old = self._entries.popitem(last=False)
                    used -= old.nbytes
            return entry

    def drop(self, workspace: str, dataset: str) -> None:
        with self._lock:
            self._entries.pop((workspace, dataset), None)
