"""Lexical (FTS5/BM25) query planning of the ``sqlite`` store: query terms, plans, document frequencies."""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

MAX_QUERY_TERMS = 64
_TERM = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """Lower-cased, de-duplicated word tokens of ``text`` (at most ``MAX_QUERY_TERMS``), in order."""
    seen: dict[str, None] = {}
    for match in _TERM.finditer(text):
        seen.setdefault(match.group().lower(), None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


#: English function words: in a small knowledge base they are rare enough to look informative,
#: yet they say nothing about what a question is about. They keep a tenth of their weight.
_STOP_WORD_TEXT = """
a about an and any are as at be been but by can could did do does for from had has have how i if in
into is it its may me might my no not of on or our shall should so than that the their them then
there these they this those to us was we were what when where which while who whom why will with
would you your
"""
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
STOP_WORD_WEIGHT = 0.1


def fts5_idf(rows: int, matches: int) -> float:
    """The IDF FTS5's ``bm25()`` uses: ``log((N - n + 0.5) / (n + 0.5))``, or 1e-6 where that is not positive."""
    idf = math.log((rows - matches + 0.5) / (matches + 0.5))
    return idf if idf > 0 else 1e-6


def positive_idf(rows: int, matches: int) -> float:
    """Lucene's BM25 IDF, ``log(1 + (N - n + 0.5) / (n + 0.5))``: positive even for a term in most chunks."""
    return math.log1p((rows - matches + 0.5) / (matches + 0.5))


def term_weight(term: str, rows: int, matches: int) -> float:
    """How much a query term counts in small-corpus ranking: its positive IDF, a tenth for stop words."""
    return positive_idf(rows, matches) * (STOP_WORD_WEIGHT if term in STOP_WORDS else 1.0)


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _any(terms: Sequence[str]) -> str:
    return " OR ".join(_phrase(t) for t in terms)


@dataclass(frozen=True)
class QueryPlan:
    """Which chunks BM25 scores: those matching ``gate``; ``rest`` terms only add to their scores.

    ``bounded``: the gate may still match more than the budget, so only its newest ``budget``
    matches in scope are scored.
    """

    gate: str
    rest: tuple[str, ...] = ()
    bounded: bool = False

    def expressions(self) -> list[str]:
        """FTS5 queries whose best scores per chunk, merged, give the exact top of the gate chunks.

        ``gate AND rest`` scores the chunks holding rest terms exactly; ``gate`` alone scores the
        others exactly and under-scores those, which the first query ranks anyway: a chunk without
        rest terms in the true top n is in the gate-only top n (every chunk above it there is above
        it in truth), and an under-scored chunk missing from the first query's top n has n exact
        scores above it. Cheaper than ``gate NOT rest``, which would count the rest terms twice.
        """
        if not self.rest:
            return [self.gate]
        return [f"({self.gate}) AND ({_any(self.rest)})", self.gate]


def plan_query(terms: Sequence[str], df: dict[str, int], total: int, budget: int) -> QueryPlan | None:
    """Plan a lexical query from its terms' document frequencies (``None`` when there are no terms).

    Terms in at least half the chunks are dropped while another term that some chunk holds remains
    (a question whose only rarer words are absent from the corpus still searches its frequent ones): FTS5's BM25 gives
    them an IDF of 1e-6 (``log((N - n + 0.5) / (n + 0.5))`` is not positive there), so they only
    break ties and widen the set of chunks scored to ones that match nothing but words like "how"
    or "the". Then exact BM25 (one OR of the kept terms) while their summed frequencies fit
    ``budget``. Beyond it: the rarest terms whose frequencies fit the budget form the *gate* (or,
    when no single term is rare enough, the conjunction of the rarest few, ``bounded``); the other
    kept terms are scored for gate chunks without widening the set. So work stays near ``budget``
    chunks while the chunks most likely to rank first, those holding the rarest terms, get their
    exact score. ``budget <= 0`` scores every term of every matching chunk (exact, slowest).
    """
    if not terms:
        return None
    if budget <= 0:
        return QueryPlan(_any(terms))
    informative = [t for t in terms if df.get(t, 0) < total / 2]
    if any(df.get(t, 0) > 0 for t in informative):
        terms = informative
    if sum(df.get(t, 0) for t in terms) <= budget:
        return QueryPlan(_any(terms))
    kept = sorted(informative, key=lambda t: df.get(t, 0)) or [min(terms, key=lambda t: df.get(t, 0))]
    if sum(df.get(t, 0) for t in kept) <= budget:
        return QueryPlan(_any(kept))
    gate: list[str] = []
    spent = 0
    for term in kept:
        if spent + df.get(term, 0) > budget:
            break
        gate.append(term)
        spent += df.get(term, 0)
    if gate:
        return QueryPlan(_any(gate), tuple(kept[len(gate):]))
    gate = [kept[0]]
    estimate = float(df.get(kept[0], 0))
    for term in kept[1:]:
        if estimate <= budget:
            break
        gate.append(term)
        estimate *= df.get(term, 0) / max(total, 1)
    return QueryPlan(" AND ".join(_phrase(t) for t in gate), tuple(kept[len(gate):]), bounded=True)


# -- document frequencies (planning only) ---------------------------------------------------------


class _Frequencies:
    """Cached document frequencies and chunk totals per workspace, used only to plan queries (never to score).

    Entries expire after ``ttl`` seconds or when the workspace's total has moved by more than 10%
    since they were read, so stale values can only make a query slower or its gate wider, never
    wrong.
    """

    def __init__(self, ttl: float = 300.0, size: int = 50_000) -> None:
        self.ttl = ttl
        self.size = size
        self._df: OrderedDict[tuple[str, str], tuple[int, int, float]] = OrderedDict()
        self._totals: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def adjust_total(self, workspace: str, change: int) -> None:
        """Follow this process's own writes (other processes' show after ``ttl``)."""
        with self._lock:
            cached = self._totals.get(workspace)
            if cached is not None:
                self._totals[workspace] = (max(0, cached[0] + change), cached[1])

    def total(self, db: sqlite3.Connection, workspace: str) -> int:
        now = time.monotonic()
        with self._lock:
            cached = self._totals.get(workspace)
            if cached is not None and now - cached[1] < self.ttl:
                return cached[0]
        total = int(db.execute("SELECT count(*) FROM chunks WHERE workspace = ?", (workspace,)).fetchone()[0])
        with self._lock:
            self._totals[workspace] = (total, now)
            self._totals.move_to_end(workspace)
            while len(self._totals) > self.size:
                self._totals.popitem(last=False)
        return total

    def df(self, db: sqlite3.Connection, workspace: str, index: str, terms: Sequence[str],
           total: int) -> dict[str, int]:
        """How many of ``workspace``'s chunks hold each term (counted in its FTS5 ``index``)."""
        now = time.monotonic()
        out: dict[str, int] = {}
        missing: list[str] = []
        with self._lock:
            for term in terms:
                cached = self._df.get((workspace, term))
                if cached and now - cached[2] < self.ttl and abs(total - cached[1]) <= 0.1 * cached[1] + 100:
                    out[term] = cached[0]
                else:
                    missing.append(term)
        cap = total // 2 + 1  # past half the chunks a term is dropped anyway: stop counting there
        for term in missing:
            out[term] = db.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {index} WHERE {index} MATCH ? LIMIT ?)",
                (_phrase(term), cap)).fetchone()[0]
        with self._lock:
            for term in missing:
                self._df[(workspace, term)] = (out[term], total, now)
                self._df.move_to_end((workspace, term))
            while len(self._df) > self.size:
                self._df.popitem(last=False)
        return out
