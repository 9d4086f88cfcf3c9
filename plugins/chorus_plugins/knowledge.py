"""Built-in knowledge plugin: retrieval for bots with datasets.

The query is built from the conversation, not only the last message: the last user message is
searched on its own and together with the previous user turn, and the two rankings are fused, so a
follow-up like "and for Europe?" finds the chunk about Europe in the topic of the earlier question.
Sources are numbered in the system prompt (see ``docs/layering.md``) and cited by
:mod:`chorus_plugins.citations`. Retrieval is timed into the request's observation and traced as a
``retrieval`` span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from chorus import hookimpl
from chorus.config import BotConfig
from chorus.context import RequestContext, Source
from chorus.registry import Knowledge
from chorus.schemas import user_texts
from chorus.vectorstores import SearchHit

RRF_K = 60


def conversation_queries(ctx: RequestContext) -> list[str]:
    """The last user message, and (for follow-ups) it together with the previous user message."""
    users = user_texts(ctx.request.messages)
    if not users:
        return []
    if len(users) == 1:
        return [users[-1]]
    return [users[-1], f"{users[-2]}\n{users[-1]}"]


def chunk_url(hit: SearchHit) -> str:
    """The document's own URL, else a stable ``chorus://`` URI naming dataset, file and chunk."""
    chunk = hit.chunk
    return chunk.url or f"chorus://datasets/{chunk.dataset}/files/{chunk.file_id}/chunks/{chunk.index}"


def to_source(hit: SearchHit) -> Source:
    chunk = hit.chunk
    title = chunk.title or chunk.source
    headings = list(chunk.headings)
    if headings and headings[0] == title:  # the document's H1 usually repeats its title
        headings = headings[1:]
    if headings:
        title = f"{title} › {' › '.join(headings)}" if title else " › ".join(headings)
    return Source(
        text=chunk.text, title=title, url=chunk_url(hit), id=chunk.id,
        metadata={"dataset": chunk.dataset, "file_id": chunk.file_id, "filename": chunk.source,
                  "chunk": chunk.index, "score": hit.score},
    )


@hookimpl
def retrieve_context(ctx: RequestContext) -> Awaitable[list[Source]] | None:
    """Top chunks of the bot's datasets within its ``retrieval`` limits.

    Synchronous when there is nothing to search (no task for requests without datasets); returns
    the search as an awaitable otherwise.
    """
    target = ctx.target
    knowledge = ctx.registry.knowledge
    if target is None or target.bot is None or not target.bot.datasets or knowledge is None:
        return None
    queries = conversation_queries(ctx)
    if not queries:
        return None
    return _retrieve(ctx, knowledge, target.bot, queries)


async def _retrieve(ctx: RequestContext, knowledge: Knowledge, bot: BotConfig, queries: list[str]) -> list[Source]:
    observation = ctx.observation
    attributes = None
    if observation.trace is not None:
        attributes = {"gen_ai.operation.name": "retrieval", "chorus.datasets": list(bot.datasets),
                      "chorus.retrieval.queries": len(queries)}
    started = time.perf_counter()
    try:
        with observation.span("retrieval", attributes) as span:
            sources = await _search(ctx, knowledge, bot, queries)
            if span is not None:
                span.set_attribute("chorus.retrieval.hits", len(sources))
    finally:
        observation.add_retrieval(time.perf_counter() - started)
    return sources


async def _search(ctx: RequestContext, knowledge: Knowledge, bot: BotConfig, queries: list[str]) -> list[Source]:
    settings = bot.retrieval
    rankings = await asyncio.gather(*(
        knowledge.search(ctx.workspace.id, list(bot.datasets), q, k=settings.top_k * 2, min_score=settings.min_score)
        for q in queries
    ))
    fused: dict[str, tuple[float, SearchHit]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            score, _ = fused.get(hit.chunk.id, (0.0, hit))
            fused[hit.chunk.id] = (score + 1.0 / (RRF_K + rank + 1), hit)
    ordered = [hit for _, hit in sorted(fused.values(), key=lambda item: -item[0])]
    sources: list[Source] = []
    budget = settings.max_context_chars
    for hit in ordered[: settings.top_k]:
        if len(hit.chunk.text) > budget:
            break
        budget -= len(hit.chunk.text)
        sources.append(to_source(hit))
    ctx.state["knowledge.hits"] = len(sources)
    return sources
