"""Incremental stop-sequence handling for streamed text."""

from __future__ import annotations

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
