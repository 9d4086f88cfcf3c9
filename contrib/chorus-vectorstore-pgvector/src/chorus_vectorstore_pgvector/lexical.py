"""Lexical side of the ``pgvector`` store: text folding, tsquery building and BM25 query planning.

Documents and queries are folded in Python (Unicode compatibility decomposition, combining marks
removed: ``Crème`` = ``Creme``, ``ｆｏｏ`` = ``foo``) and then analysed by PostgreSQL's own parser and
text search configuration (lower case, stop words, Snowball stemming), so both sides always agree
whatever extensions the server has. Query text is never tsquery syntax: it goes through
``to_tsvector`` and the resulting lexemes are quoted one by one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from chorus_vectorstore_pgvector.filters import clean

MAX_QUERY_TERMS = 64
MAX_QUERY_CHARS = 20_000


def fold(text: str) -> str:
    """``text`` without diacritics and compatibility variants, as PostgreSQL text can hold it (NUL is a space)."""
    text = clean(text.replace("\x00", " "))
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold_query(text: str) -> str:
    """A query folded like documents, control characters as spaces, at most ``MAX_QUERY_CHARS``."""
    text = text[:MAX_QUERY_CHARS]
    text = "".join(" " if c < " " else c for c in text) if any(c < " " for c in text) else text
    return fold(text)


def quote_lexeme(lexeme: str) -> str:
    """One lexeme as a quoted tsquery operand (backslashes and quotes doubled)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def any_of(terms: Sequence[str]) -> str:
    return " | ".join(quote_lexeme(t) for t in terms)


def all_of(terms: Sequence[str]) -> str:
    return " & ".join(quote_lexeme(t) for t in terms)


@dataclass(frozen=True)
class QueryPlan:
    """Which chunks BM25 scores: those matching the tsquery ``gate``; every query term adds to
    their scores. ``bounded``: the gate may still match more than the budget, so at most
    ``budget`` of its matches are scored."""

    gate: str
    bounded: bool = False


def plan_query(terms: Sequence[str], df: dict[str, int], total: int, budget: int) -> QueryPlan | None:
    """Plan a lexical query from its terms' document frequencies in the workspace.

    Terms no chunk of the workspace holds are dropped (``None`` when none is left). With
    ``budget <= 0`` every chunk holding any term is scored (exact). Otherwise terms found in at
    least half the chunks leave the gate while a rarer one remains (they still add to the scores
    of the chunks the gate lets through); then, while the kept terms' summed frequencies fit the
    budget, the gate is all of them (exact for every chunk holding one); beyond it, the rarest
    terms whose frequencies fit the budget; when not even the rarest fits, the conjunction of the
    rarest few (``bounded``). The same planning as the built-in ``sqlite`` store's, so work stays
    near ``budget`` chunks while the chunks most likely to rank first get their exact score.
    """
    present = [t for t in terms if df.get(t, 0) > 0]
    if not present:
        return None
    if budget <= 0:
        return QueryPlan(any_of(present))
    kept = [t for t in present if df[t] < total / 2] or [min(present, key=lambda t: df[t])]
    if sum(df[t] for t in kept) <= budget:
        return QueryPlan(any_of(kept))
    kept.sort(key=lambda t: df[t])
    gate: list[str] = []
    spent = 0
    for term in kept:
        if spent + df[term] > budget:
            break
        gate.append(term)
        spent += df[term]
    if gate:
        return QueryPlan(any_of(gate))
    gate = [kept[0]]
    estimate = float(df[kept[0]])
    for term in kept[1:]:
        if estimate <= budget:
            break
        gate.append(term)
        estimate *= df[term] / max(total, 1)
    return QueryPlan(all_of(gate), bounded=True)
