"""Built-in citations plugin: turns ``[n]`` source markers into OpenAI ``url_citation`` annotations.

Non-stream: ``choices[].message.annotations`` lists one annotation per cited source number of each
marker, with the marker's ``start_index``/``end_index`` in the content. Stream: annotations are put
on the delta of the chunk in which their marker completes, and the full set is repeated on the
chunk carrying ``finish_reason``. Optional Perplexity-style top-level ``citations`` (URLs) and
``search_results`` (title, url, snippet) are added when the bot sets ``perplexity_citations`` or the
request sends ``return_citations: true``.

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
        if choice.get("finish_reason") and per_choice["all"]:
            delta["annotations"] = list(per_choice["all"])
            choice["delta"] = delta
    if _perplexity(ctx) and not state.get("perplexity_sent") and payload.get("choices"):
        payload.update(perplexity_fields(sources))
        state["perplexity_sent"] = True
