"""Incremental stop-sequence handling for streamed text."""

from __future__ import annotations

import re
from collections.abc import Sequence


class StopFilter:
    """Turns generated text pieces into text that is safe to emit.

    Contract: the concatenation of everything :meth:`feed` and :meth:`flush` return equals the
    generated text with leading and trailing whitespace removed, cut before the first stop sequence
    (itself excluded), and nothing returned is ever retracted. To keep that promise it holds back a
    tail that could still begin a stop sequence, and trailing whitespace (which is dropped if the
    text ends there). Leading whitespace is dropped before stops are matched.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self._started = False
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add a piece of generated text; return what may be emitted now (possibly ``""``)."""
        if self.stopped or not text:
            return ""
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        held = self._held + text
        cut = min((i for i in (held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return held[:cut].rstrip()
        keep = max(self._partial_stop(held), len(held) - len(held.rstrip()))
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep]

    def flush(self) -> str:
        """The held-back text when generation ended without a stop sequence, right-stripped."""
        held, self._held = self._held, ""
        return "" if self.stopped else held.rstrip()

    def _partial_stop(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of some stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best


_SENTENCE_END = re.compile(r"[.!?…]+(?=\s)|\n")
_WORDS = re.compile(r"[^\W_]+")


def _key(sentence: str) -> str:
    """What makes two sentences "the same": their words, lower-cased (punctuation and spacing aside)."""
    return " ".join(_WORDS.findall(sentence.lower()))


class RepeatGuard:
    """Ends an answer where it starts repeating a sentence it already wrote.

    A small model at temperature 0 can fall into a loop ("I'm not sure. I'm not sure. ..."). Fed
    the text :class:`StopFilter` lets through, this passes text on until a sentence is complete and
    equal (same words, case aside) to an earlier one: then :attr:`stopped` is set and neither that
    sentence nor anything after it is emitted. While the sentence being written is still the start
    of an earlier sentence it is held back, so a repeat is never half-sent; as soon as it differs it
    flows again. Nothing emitted is ever retracted.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._sentence = ""      # the sentence being written
        self._emitted = 0        # how much of it has been let through
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what may be emitted now (possibly ``""``)."""
        if self.stopped or not text:
            return ""
        out: list[str] = []
        self._sentence += text
        while (end := _SENTENCE_END.search(self._sentence)) is not None:
            sentence, self._sentence = self._sentence[: end.end()], self._sentence[end.end():]
            emitted, self._emitted = self._emitted, 0
            key = _key(sentence)
            if key in self._seen and not _key(sentence[:emitted]):
                self.stopped = True
                self._sentence = ""
                return "".join(out)
            if key:
                self._seen.add(key)
            out.append(sentence[emitted:])
        if _key(self._sentence) and not self._repeating():  # words that start no earlier sentence
            out.append(self._sentence[self._emitted:])
            self._emitted = len(self._sentence)
        return "".join(out)

    def flush(self) -> str:
        """The held-back rest when generation ended (dropped if it repeats an earlier sentence)."""
        rest, emitted = self._sentence, self._emitted
        self._sentence, self._emitted = "", 0
        if self.stopped:
            return ""
        if not _key(rest[:emitted]) and _key(rest) in self._seen:
            self.stopped = True
            return ""
        return rest[emitted:] if rest.strip() else ""

    def _repeating(self) -> bool:
        """Whether the sentence being written (none of its words sent yet) is the start of an earlier one."""
        if _key(self._sentence[: self._emitted]):
            return False
        key = _key(self._sentence)
        return bool(key) and any(seen.startswith(key) for seen in self._seen)
