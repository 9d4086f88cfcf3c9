"""Built-in web search plugin: bots with ``search = { engine = ..., mode = ... }`` search the web.

* ``mode = "always"``: search before the model, from the conversation (like retrieval); results
  become numbered sources in the system prompt.
* ``mode = "auto"``: the model gets a ``web_search`` tool and decides; each call's results are
  appended to the request's sources and returned to the model with their source numbers.

Either way results are cited like dataset chunks (``url_citation`` annotations, Perplexity-style
``search_results`` when enabled). Request knobs: OpenAI's ``web_search_options``
(``search_context_size``, ``user_location``) and Perplexity's ``search_domain_filter`` /
``search_recency_filter``. An engine failure degrades to an answer without search plus a logged
warning, unless the bot sets ``required = true``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeGuard

import msgspec

from chorus import hookimpl
from chorus.config import SearchOptions
from chorus.context import RequestContext, Source
from chorus.errors import ChorusError
from chorus.fields import RequestField
from chorus.schemas import user_texts
from chorus.search import HOSTED_SEARCH_STATE, Recency, SearchError, SearchQuery, SearchResult

log = logging.getLogger("chorus.search")
TOOL_NAME = "web_search"
CONTEXT_SIZES = {"low": 3, "high": 10}
RECENCIES = frozenset({"hour", "day", "week", "month", "year"})
TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Search the web for current information. Returns numbered results to cite as [n].",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for"},
                "recency": {"type": "string", "enum": sorted(RECENCIES), "description": "Only results this recent"},
            },
            "required": ["query"],
        },
    },
}


@hookimpl
def request_fields() -> list[RequestField]:
    """The search knobs clients send: OpenAI's ``web_search_options``, Perplexity's filters."""
    return [
        RequestField(name="web_search_options", type=dict[str, Any] | None,
                     doc="OpenAI: search_context_size (low|medium|high), user_location.approximate.country"),
        RequestField(name="search_domain_filter", type=list[str] | None,
                     doc="Perplexity: domains to search only (or, prefixed with '-', to exclude)"),
        RequestField(name="search_recency_filter", type=str | None,
                     doc="Perplexity: hour, day, week, month or year"),
    ]


def _options(ctx: RequestContext) -> SearchOptions | None:
    """The bot's ``search`` options, else those a request asked for (the Responses ``web_search`` tool)."""
    target = ctx.target
    if target is not None and target.bot is not None and target.bot.search is not None:
        return target.bot.search
    hosted = ctx.state.get(HOSTED_SEARCH_STATE)
    return hosted if isinstance(hosted, SearchOptions) else None


def _is_recency(value: object) -> TypeGuard[Recency]:
    return value in RECENCIES


def build_query(ctx: RequestContext, options: SearchOptions, text: str, recency: str | None = None) -> SearchQuery:
    """A query with the bot's defaults and the request's search knobs applied."""
    count = options.results
    country: str | None = None
    web = ctx.field("web_search_options") or {}
    size = web.get("search_context_size")
    if isinstance(size, str) and size in CONTEXT_SIZES:
        count = CONTEXT_SIZES[size]
    location = web.get("user_location")
    if isinstance(location, dict):
        approximate = location.get("approximate") or {}
        if isinstance(approximate, dict) and isinstance(approximate.get("country"), str):
            country = approximate["country"].upper()[:2]
    include: list[str] = []
    exclude: list[str] = []
    for domain in ctx.field("search_domain_filter") or ():
        if isinstance(domain, str) and domain.strip("-"):
            (exclude if domain.startswith("-") else include).append(domain.lstrip("-"))
    requested = ctx.field("search_recency_filter")
    if recency is None and requested in RECENCIES:
        recency = requested
    return SearchQuery(query=text, count=count, recency=recency if _is_recency(recency) else None,
                       include_domains=include, exclude_domains=exclude, country=country)


async def run_search(ctx: RequestContext, options: SearchOptions, query: SearchQuery) -> list[Source]:
    """Search (and optionally fetch pages); failures degrade to ``[]`` unless search is required."""
    engine = ctx.registry.search_engines.get(options.engine)
    if engine is None:
        return []
    try:
        results = await engine.search(query)
    except SearchError as exc:
        log.warning("request %s: search engine %s failed (%s): %s", ctx.request_id, engine.id, exc.kind, exc.message)
        if options.required:
            raise ChorusError(f"Web search is required for this model and failed ({exc.kind}).",
                              status_code=502, error_type="upstream_error", code="search_unavailable") from None
        return []
    results = results[: query.count]
    pages = await fetch_pages(results[: options.fetch_pages], options) if options.fetch_pages else {}
    return [
        Source(text=pages.get(r.url) or r.snippet or r.title, title=r.title, url=r.url, id=r.url,
               metadata={"kind": "web", "engine": engine.id, **({"date": r.date} if r.date else {})})
        for r in results
    ]


async def fetch_pages(results: list[SearchResult], options: SearchOptions) -> dict[str, str]:
    """Readable text of result pages, fetched through the egress guard (failures are skipped)."""
    from chorus.documents import document_text, parse
    from chorus.egress import EgressPolicy

    async def one(client: Any, url: str) -> tuple[str, str]:
        try:
            response = await client.get(url, follow_redirects=True)
            if response.status_code >= 400:
                return url, ""
            document = parse(response.content[: 2 * 1024 * 1024], "page.html", response.headers.get("content-type"))
            return url, document_text(document)[: options.max_page_chars]
        except Exception as exc:  # a page we cannot read is just not used (ParseError included)
            log.info("fetching %s failed: %s", url, type(exc).__name__)
            return url, ""

    async with EgressPolicy(options.egress_allow).client(timeout=10.0) as client:
        fetched = await asyncio.gather(*(one(client, r.url) for r in results))
    return {url: text for url, text in fetched if text}


def conversation_query(ctx: RequestContext) -> str:
    """The last user message; a short follow-up is joined with the previous user message."""
    users = user_texts(ctx.request.messages)
    if not users:
        return ""
    if len(users) > 1 and len(users[-1].split()) < 6:
        return f"{users[-2]} {users[-1]}"
    return users[-1]


@hookimpl
def retrieve_context(ctx: RequestContext) -> Awaitable[list[Source]] | None:
    """``mode = "always"``: search from the conversation before the model runs.

    Synchronous (no task) for bots that do not search this way; returns the search otherwise.
    """
    options = _options(ctx)
    if options is None or options.mode != "always":
        return None
    text = conversation_query(ctx)
    if not text:
        return None
    return run_search(ctx, options, build_query(ctx, options, text))


@hookimpl
def list_tools(ctx: RequestContext) -> list[dict[str, Any]] | None:
    """``mode = "auto"``: offer the ``web_search`` tool."""
    options = _options(ctx)
    return [TOOL] if options is not None and options.mode == "auto" else None


@hookimpl
async def run_tools(ctx: RequestContext, tool_calls: list[dict[str, Any]]) -> dict[str, str] | None:
    """Run ``web_search`` calls; results join the request's sources and are numbered for citing."""
    options = _options(ctx)
    calls = [c for c in tool_calls if c.get("function", {}).get("name") == TOOL_NAME]
    if options is None or options.mode != "auto" or not calls:
        return None

    async def one(call: dict[str, Any]) -> str:
        try:
            arguments = msgspec.json.decode(call["function"].get("arguments") or "{}")
        except msgspec.DecodeError:
            return "Error: the arguments for web_search are not valid JSON."
        query = arguments.get("query") if isinstance(arguments, dict) else None
        if not isinstance(query, str) or not query.strip():
            return "Error: web_search needs a non-empty 'query'."
        recency = arguments.get("recency")
        sources = await run_search(ctx, options, build_query(ctx, options, query, recency if isinstance(recency, str) else None))
        if not sources:
            return "No web results (the search returned nothing or is unavailable). Answer from what you know."
        first = len(ctx.sources) + 1
        ctx.sources.extend(sources)
        lines = ["Web results (cite them with their numbers in square brackets):"]
        for number, source in enumerate(sources, start=first):
            date = f" ({source.metadata['date']})" if "date" in source.metadata else ""
            lines.append(f"[{number}] {source.title} <{source.url}>{date}\n{source.text}")
        return "\n\n".join(lines)

    results = []
    for call in calls:  # sequential: source numbers must not interleave
        results.append(await one(call))
    return {call["id"]: result for call, result in zip(calls, results, strict=True)}
