"""Cut a :class:`~chorus.knowledge.model.ParsedDocument` into retrievable chunks.

Contract of :func:`chunk_document`:

* every chunk's ``text`` is exactly ``document_text(doc)[chunk.start:chunk.end]``, never longer
  than ``max_chars``, with no leading or trailing whitespace; headings are not copied into the
  text (they are in ``chunk.headings``);
* consecutive sections with the same heading path (a "run") are packed together while they fit;
  a run that fits in one piece may also join a neighbouring such piece when both are small (at most
  an eighth of ``max_chars``: 150 by default), share the top-level heading and are siblings or
  parent and child; a merged chunk's ``headings`` is the common prefix of its sections' paths;
* ``row`` sections (JSON/CSV records) are grouped with neighbouring rows only, never split unless
  a single row exceeds ``max_chars``;
* a text section longer than ``max_chars`` is split at paragraph, then sentence, then line, then
  word boundaries (a hard cut only inside a longer "word"), and consecutive pieces overlap by about
  ``overlap_chars``, starting at a sentence or word boundary;
* tables, code and rows too long for one chunk are split between lines, without overlap;
* the output depends only on the inputs (deterministic).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chorus.contract.documents import Chunk, ParsedDocument, Section

__all__ = ["chunk_document", "document_text"]

SEPARATOR = "\n\n"

# A sentence ends after . ! ? (or their CJK forms), optionally closed by quotes or brackets, and
# before whitespace. Group-less so ``m.end()`` is the end of the punctuation.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*(?=\s)")
_SENTENCE_START = re.compile(r"[.!?…。！？][\"'”’)\]]*\s+")
_WORD_START = re.compile(r"\s+")


def document_text(doc: ParsedDocument) -> str:
    """The text chunk offsets index into: section texts joined by a blank line."""
    return SEPARATOR.join(section.text for section in doc.sections)


def chunk_document(
    doc: ParsedDocument,
    *,
    workspace: str,
    dataset: str,
    file_id: str,
    source: str,
    attributes: Mapping[str, Any] | None = None,
    max_chars: int = 1200,
    overlap_chars: int = 150,
) -> list[Chunk]:
    """Chunks of ``doc`` with ids ``"<file_id>:<index>"``; see the module docstring for the rules."""
    if max_chars < 20:
        raise ValueError("max_chars must be at least 20")
    if not 0 <= overlap_chars <= max_chars // 2:
        raise ValueError("overlap_chars must be between 0 and max_chars / 2")
    text = document_text(doc)
    spans = _Chunker(text, max_chars, overlap_chars).run(doc.sections)
    attrs = dict(attributes or {})
    return [
        Chunk(
            id=f"{file_id}:{index}",
            workspace=workspace,
            dataset=dataset,
            file_id=file_id,
            index=index,
            text=text[start:end],
            title=doc.title,
            headings=list(headings),
            url=doc.url,
            source=source,
            start=start,
            end=end,
            attributes=dict(attrs),
        )
        for index, (start, end, headings) in enumerate(spans)
    ]


_Span = tuple[int, int, tuple[str, ...]]
_Piece = tuple[int, int]


@dataclass
class _Group:
    """Small whole runs being merged into one chunk."""

    start: int
    end: int
    headings: tuple[str, ...]  # common prefix of the members' heading paths
    rows: bool                 # members are row sections


class _Chunker:
    def __init__(self, text: str, max_chars: int, overlap: int) -> None:
        self.text = text
        self.max = max_chars
        self.overlap = overlap
        self.small = max_chars // 8
        self.spans: list[_Span] = []
        self.group: _Group | None = None

    def run(self, sections: list[Section]) -> list[_Span]:
        run: list[tuple[int, int, str]] = []
        key: tuple[tuple[str, ...], bool] = ((), False)
        offset = 0
        for section in sections:
            start, end = self._trim(offset, offset + len(section.text))
            offset += len(section.text) + len(SEPARATOR)
            if start >= end:
                continue
            section_key = (tuple(section.headings), section.kind == "row")
            if section_key != key:
                self._close_run(run, *key)
                run, key = [], section_key
            run.append((start, end, section.kind))
        self._close_run(run, *key)
        self._flush_group()
        return self.spans

    def _close_run(self, run: list[tuple[int, int, str]], path: tuple[str, ...], rows: bool) -> None:
        """Pack one run; a run that fits in one piece is offered for merging with its neighbours."""
        if not run:
            return
        pieces = self._pack(run)
        if len(pieces) == 1:
            self._offer(*pieces[0], path, rows)
            return
        self._flush_group()
        self.spans.extend((start, end, path) for start, end in pieces)

    def _pack(self, run: list[tuple[int, int, str]]) -> list[_Piece]:
        """Greedy packing of whole sections; a section longer than ``max`` is split on its own."""
        pieces: list[_Piece] = []
        current: _Piece | None = None
        for start, end, kind in run:
            if end - start > self.max:
                if current is not None:
                    pieces.append(current)
                    current = None
                pieces.extend(self._split_text(start, end) if kind == "text" else self._split_lines(start, end))
            elif current is not None and end - current[0] <= self.max:
                current = (current[0], end)
            else:
                if current is not None:
                    pieces.append(current)
                current = (start, end)
        if current is not None:
            pieces.append(current)
        return pieces

    def _offer(self, start: int, end: int, path: tuple[str, ...], rows: bool) -> None:
        group = self.group
        if (
            group is not None
            and group.rows == rows
            and end - group.start <= self.max
            and group.end - group.start <= self.small
            and end - start <= self.small
            and _related(group.headings, path)
        ):
            group.end = end
            group.headings = _common_prefix(group.headings, path)
            return
        self._flush_group()
        self.group = _Group(start, end, path, rows)

    def _flush_group(self) -> None:
        if self.group is not None:
            self.spans.append((self.group.start, self.group.end, self.group.headings))
            self.group = None

    def _trim(self, start: int, end: int) -> tuple[int, int]:
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    # -- long text sections

    def _split_text(self, start: int, end: int) -> list[_Piece]:
        pieces: list[_Piece] = []
        cur = start
        while cur < end:
            if end - cur <= self.max:
                pieces.append((cur, end))
                break
            cut = self._break(cur, cur + self.max)
            piece_start, piece_end = self._trim(cur, cut)
            pieces.append((piece_start, piece_end))
            following, _ = self._trim(cut, end)
            if self.overlap:
                back, _ = self._trim(self._overlap_start(cur, piece_end), end)
                if cur < back < following:
                    following = back
            cur = following
        return pieces

    def _break(self, cur: int, limit: int) -> int:
        """Where a piece starting at ``cur`` should end, at most ``limit``: the last paragraph,
        sentence or line break in the second half of the window, else the last space, else ``limit``."""
        text = self.text
        half = cur + self.max // 2
        paragraph = text.rfind("\n\n", half, limit)
        if paragraph > cur:
            return paragraph
        sentence = -1
        for match in _SENTENCE_END.finditer(text, half, limit):
            sentence = match.end()
        if sentence > cur:
            return sentence
        line = text.rfind("\n", half, limit)
        if line > cur:
            return line
        space = max(text.rfind(ch, cur + 1, limit + 1) for ch in " \t\n")
        return space if space > cur else limit

    def _overlap_start(self, cur: int, piece_end: int) -> int:
        """Start of the next piece so that it repeats about ``overlap`` characters: the sentence
        start nearest that point, else the nearest word start, else a hard offset."""
        target = piece_end - self.overlap
        lo = max(cur + 1, piece_end - self.overlap - self.overlap // 2)
        # A sentence start may give a little less overlap than a word start would.
        for pattern, hi in ((_SENTENCE_START, piece_end - self.overlap // 3),
                            (_WORD_START, piece_end - self.overlap // 2)):
            best = -1
            for match in pattern.finditer(self.text, max(lo - 1, 0), hi):
                position = match.end()
                if lo <= position < hi and (best < 0 or abs(position - target) < abs(best - target)):
                    best = position
            if best >= 0:
                return best
        return max(target, cur + 1)

    # -- long tables, code and rows

    def _split_lines(self, start: int, end: int) -> list[_Piece]:
        """Greedy whole lines per piece; a single line longer than ``max`` is split at words."""
        text = self.text
        pieces: list[_Piece] = []
        cur = start
        while cur < end:
            if end - cur <= self.max:
                pieces.append(self._trim(cur, end))
                break
            newline = text.rfind("\n", cur + 1, cur + self.max + 1)
            if newline > cur:
                cut = newline
            else:
                space = max(text.rfind(ch, cur + 1, cur + self.max + 1) for ch in " \t")
                cut = space if space > cur else cur + self.max
            pieces.append(self._trim(cur, cut))
            cur, _ = self._trim(cut, end)
        return pieces


def _related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Same top-level heading, and siblings or parent and child (one level apart at most)."""
    return a[:1] == b[:1] and len(_common_prefix(a, b)) >= max(len(a), len(b)) - 1


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return a[:size]
