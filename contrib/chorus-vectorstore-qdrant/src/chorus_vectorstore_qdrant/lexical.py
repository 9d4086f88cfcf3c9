"""Lexical ranking as Qdrant sparse vectors: BM25 term weights computed here, IDF by Qdrant.

Text is cut into word tokens (``[^\\W_]+`` after Unicode compatibility folding, with diacritics
removed and case folded, so ``Ünïcode`` and ``unicode`` are one term), each token is stemmed with
Snowball (``rotating`` and ``rotate`` are one term) and hashed to a 32-bit sparse index.

A chunk's sparse vector holds, for each of its terms, the BM25 term-frequency factor::

    tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))

where ``tf`` counts the term in the text, plus ``title_weight`` per occurrence in the title and
``headings_weight`` per occurrence in the headings, and ``length`` is the chunk's token count
weighted the same way. A query's vector holds 1.0 for each distinct term. The collection's sparse
vector uses Qdrant's IDF modifier, so the dot product Qdrant computes is
``sum(idf(term) * tf_factor(term))`` over the query's terms: BM25. ``avg_len`` is a setting rather
than a live corpus statistic, so a chunk's weights never change after it is written.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import snowballstemmer

TOKENIZER = "words-nfkd-casefold-v1"  # recorded in the collection with the stemmer
HASH = "blake2b-32"
MAX_QUERY_TERMS = 64
MAX_TOKEN_CHARS = 64  # longer "words" (hashes, base64) are not indexed
_WORD = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Case-folded text without diacritics (NFKD, combining marks dropped)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def tokens(text: str) -> Iterator[str]:
    """The folded word tokens of ``text``, in order (tokens over ``MAX_TOKEN_CHARS`` skipped)."""
    for match in _WORD.finditer(fold(text)):
        token = match.group()
        if len(token) <= MAX_TOKEN_CHARS:
            yield token


def term_id(term: str) -> int:
    """A stable 32-bit sparse index for ``term`` (independent of process and platform)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


class Analyzer:
    """Tokenizer, stemmer and BM25 weighting; safe to share between threads."""

    def __init__(self, stemmer: str = "english", *, k1: float = 1.2, b: float = 0.75, avg_len: float = 200.0,
                 title_weight: float = 2.0, headings_weight: float = 1.5) -> None:
        self.stemmer = stemmer
        self.k1, self.b, self.avg_len = k1, b, avg_len
        self.title_weight, self.headings_weight = title_weight, headings_weight
        self._stemmer = snowballstemmer.stemmer(stemmer) if stemmer else None
        self._lock = threading.Lock()
        self.token_id = lru_cache(maxsize=100_000)(self._token_id)

    @property
    def signature(self) -> dict[str, Any]:
        """What decides which sparse index a word gets: stored with the collection, checked at start."""
        return {"tokenizer": TOKENIZER, "stemmer": self.stemmer, "hash": HASH}

    def _token_id(self, token: str) -> int:
        if self._stemmer is None:
            return term_id(token)
        with self._lock:  # Snowball stemmers keep per-call state
            stem = self._stemmer.stemWord(token)
        return term_id(stem)

    def term_ids(self, text: str) -> list[int]:
        """The sparse index of every token of ``text``, in order, repeats kept."""
        return [self.token_id(t) for t in tokens(text)]

    def document(self, text: str, title: str = "", headings: Sequence[str] = ()) -> tuple[list[int], list[float]]:
        """A chunk's sparse vector: sorted indices and their BM25 term-frequency factors."""
        freq: dict[int, float] = defaultdict(float)
        length = 0.0
        for field, weight in ((text, 1.0), (title, self.title_weight), (" \n".join(headings), self.headings_weight)):
            if not field or weight <= 0:
                continue
            for tid in self.term_ids(field):
                freq[tid] += weight
                length += weight
        norm = self.k1 * (1.0 - self.b + self.b * length / self.avg_len)
        indices = sorted(freq)
        return indices, [freq[i] * (self.k1 + 1.0) / (freq[i] + norm) for i in indices]

    def query(self, text: str) -> tuple[list[int], list[float]]:
        """A query's sparse vector: its first ``MAX_QUERY_TERMS`` distinct terms, weight 1.0 each."""
        seen: dict[str, None] = {}
        for token in tokens(text):
            seen.setdefault(token, None)
            if len(seen) >= MAX_QUERY_TERMS:
                break
        indices = sorted({self.token_id(t) for t in seen})
        return indices, [1.0] * len(indices)
