"""Built-in citations plugin: turns ``[n]`` source markers into OpenAI ``url_citation`` annotations.

Non-stream: ``choices[].message.annotations`` lists one annotation per cited source number of each
marker, with the marker's ``start_index``/``end_index`` in the content. Stream: annotations are put
on the delta of the chunk in which their marker completes, and the full set is repeated on the
chunk carrying ``finish_reason``. Optional Perplexity-style top-level ``citations`` (URLs) and
``search_results`` (title, url, snippet) are added when the bot sets ``perplexity_citations`` or the
request sends ``return_citations: true``.

Attributed citations (a bot's ``citations.attribute``): when an answer carries no marker that
names a source, each of its sentences is credited to the source holding the largest share of the
sentence's content words, if that share reaches ``citations.threshold``. The annotation's
``start_index``/``end_index`` then delimit the sentence. Small local models rarely write ``[n]``;
this still tells the client which sources an answer draws on. Non-stream: in
``message.annotations``; stream: on the chunk with ``finish_reason`` (a sentence is only known to
be unmarked once the answer is complete).

Other plugins can add or rewrite annotations in their own ``post_process`` (this one runs first:
``tryfirst``) — e.g. web search results become sources and are cited the same way.
"""

from __future__ import annotations

import re
from typing import Any

from chorus import hookimpl
from chorus.context import RequestContext, Source
from chorus.fields import RequestField

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
STATE = "citations"
#: A sentence: up to its closing punctuation (followed by a space or the end) or a line break.
SENTENCE = re.compile(r"[^\s].*?(?:[.!?…]+(?=\s|$)|(?=\n)|$)", re.DOTALL)
_WORD = re.compile(r"[^\W_]+")
#: Words that say nothing about which source a sentence comes from.
_FUNCTION_WORD_TEXT = """
a about after all also an and any are as at be been before being both but by can could did do does
doing don each for from had has have having he her here hers him his how i if in into is it its
itself just me more most my no nor not now of off on once only or other our out over own same she
should so some such than that the their them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would yes you your
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_TEXT.split())
STEM = 6  # words compare by their first six letters: "datasets" and "dataset", "configure" and "configuration"


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry meaning, lower-cased and cut to :data:`STEM` letters."""
    return {w[:STEM] for w in _WORD.findall(text.lower()) if w not in _FUNCTION_WORDS and (len(w) > 1 or w.isdigit())}


def attribute(text: str, sources: list[Source], threshold: float) -> list[dict[str, Any]]:
    """``url_citation`` annotations crediting each sentence of ``text`` to the source it overlaps most.

    A sentence's overlap with a source is the share of its content words (:func:`content_words`)
    that the source's title or text holds. The sentence is credited to the source with the largest
    overlap (the earlier source on a tie) when that overlap is at least ``threshold``; sentences
    without content words ("I don't know.") are credited to nothing.
    """
    vocabularies = [content_words(f"{s.title}\n{s.text}") for s in sources]
    found: list[dict[str, Any]] = []
    for match in SENTENCE.finditer(text):
        sentence = match.group().rstrip()
        words = content_words(sentence)
        if not words:
            continue
        shares = [len(words & vocabulary) / len(words) for vocabulary in vocabularies]
        best = max(range(len(sources)), key=lambda i: (shares[i], -i), default=None)
        if best is None or shares[best] < threshold:
            continue
        source = sources[best]
        found.append({"type": "url_citation", "url_citation": {
            "url": source.url, "title": source.title or source.url,
            "start_index": match.start(), "end_index": match.start() + len(sentence),
        }})
    return found


def annotations_for(text: str, sources: list[Source], start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Annotations for complete markers in ``text[start:]``; also the position scanned up to."""
    found: list[dict[str, Any]] = []
    end = start
    for match in MARKER.finditer(text, start):
        for number in match.group(1).split(","):
            n = int(number)
            if 1 <= n <= len(sources):
                source = sources[n - 1]
                found.append({"type": "url_citation", "url_citation": {
                    "url": source.url, "title": source.title or source.url,
                    "start_index": match.start(), "end_index": match.end(),
                }})
        end = match.end()
    tail = text.rfind("[", end)
    if tail >= 0 and len(text) - tail <= 16:  # a marker may still be arriving
        return found, tail
    return found, len(text)


def perplexity_fields(sources: list[Source]) -> dict[str, Any]:
    return {
        "citations": [s.url for s in sources],
        "search_results": [{"title": s.title, "url": s.url, "snippet": s.text[:300],
                            **({"date": s.metadata["date"]} if "date" in s.metadata else {})} for s in sources],
    }


def _attribution_threshold(ctx: RequestContext) -> float | None:
    """The bot's attribution threshold, or ``None`` when it does not attribute unmarked answers."""
    bot = ctx.target.bot if ctx.target else None
    if bot is None or not bot.citations.attribute:
        return None
    return bot.citations.threshold


def _perplexity(ctx: RequestContext) -> bool:
    bot = ctx.target.bot if ctx.target else None
    return bool((bot is not None and bot.perplexity_citations) or ctx.field("return_citations") is True)


@hookimpl
def request_fields() -> list[RequestField]:
    """``return_citations: true`` asks for Perplexity-style ``citations`` and ``search_results``."""
    return [RequestField(name="return_citations", type=bool | None,
                         doc="add Perplexity-style citations and search_results to the response")]


@hookimpl(tryfirst=True)
def post_process(ctx: RequestContext, payload: dict[str, Any], chunk: bool) -> None:
    """Annotate citations of ``ctx.sources`` (no-op without sources)."""
    sources = ctx.sources
    if not sources:
        return
    if not chunk:
        for choice in payload.get("choices") or []:
            message = choice.get("message") or {}
            content = message.get("content")
            if isinstance(content, str):
                found, _ = annotations_for(content, sources)
                if not found and (threshold := _attribution_threshold(ctx)) is not None:
                    found = attribute(content, sources, threshold)
                if found:
                    message["annotations"] = [*(message.get("annotations") or []), *found]
        if _perplexity(ctx):
            payload.update(perplexity_fields(sources))
        return
    state = ctx.state.setdefault(STATE, {})
    for choice in payload.get("choices") or []:
        per_choice = state.setdefault(choice.get("index", 0), {"text": "", "scanned": 0, "all": []})
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            per_choice["text"] += content
            found, per_choice["scanned"] = annotations_for(per_choice["text"], sources, per_choice["scanned"])
            if found:
                per_choice["all"].extend(found)
                delta["annotations"] = found
        if choice.get("finish_reason"):
            if not per_choice["all"] and (threshold := _attribution_threshold(ctx)) is not None:
                per_choice["all"] = attribute(per_choice["text"], sources, threshold)
            if per_choice["all"]:
                delta["annotations"] = list(per_choice["all"])
                choice["delta"] = delta
    if _perplexity(ctx) and not state.get("perplexity_sent") and payload.get("choices"):
        payload.update(perplexity_fields(sources))
        state["perplexity_sent"] = True
