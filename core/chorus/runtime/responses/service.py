"""The Responses API on top of the chat pipeline: history, hosted tools, the run, storage.

A Responses request is translated into the chat request it means (:mod:`.translate`) and run by
the same :class:`~chorus.runtime.pipeline.Pipeline` as ``/v1/chat/completions``, so backstory
layering, retrieval, hidden server tools, web search, teams, parked turns and usage summing are
the chat path's own. This module adds what only Responses has:

* history: ``previous_response_id`` (a stored chain) or ``conversation`` (a stored conversation),
  put in front of the turn's input; the ``conversation/id=<id>`` selector names a conversation whose
  ``metadata.model`` is the target;
* hosted tools: ``file_search`` searches the caller's vector stores before the model (the search
  of ``POST /v1/vector_stores/{id}/search``) and its hits are cited with ``file_citation``;
  ``web_search`` gives the model the workspace's web search (the web search plugin's ``auto`` mode);
* storage: with ``store`` (the default) the response is written before its final event or body is
  returned, and a conversation gets the turn's input and output items appended.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from chorus.contract.config import SearchOptions
from chorus.contract.context import RequestContext, Source, Workspace
from chorus.contract.errors import ChorusError, InvalidRequest, NotFound
from chorus.contract.observe import Observation
from chorus.contract.schemas import user_texts
from chorus.contract.search import HOSTED_SEARCH_STATE
from chorus.contract.targets import unknown_target
from chorus.runtime.knowledge.service import Knowledge
from chorus.runtime.pipeline import Pipeline
from chorus.runtime.responses.events import EventStream
from chorus.runtime.responses.translate import (
    FILE_SEARCH,
    Item,
    chat_request,
    items_to_messages,
    new_id,
    normalize_items,
    output_items,
    response_object,
    split_tools,
)
from chorus.runtime.responses.wire import ResponsesRequest, check_metadata
from chorus.storage.responses import ResponseStore, StoredResponse

CONVERSATION_PREFIX = "conversation/id="


@dataclass
class Turn:
    """One Responses request, prepared: the chat context to run and what to store afterwards."""

    request: ResponsesRequest
    ctx: RequestContext
    response_id: str
    created_at: int
    model: str                      # the selector the response echoes (as the client sent it)
    input_items: list[Item]
    context: list[Item]             # history + input: what the next turn of a chain continues from
    store: bool
    conversation: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def not_chainable(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response {response_id!r} not found. Only stored responses can be continued: a response "
        "created with store: false (or deleted, or of another workspace) cannot be chained.",
        param="previous_response_id", code="previous_response_not_found")


def conversation_not_found(conversation_id: str, param: str) -> NotFound:
    return NotFound(f"No such conversation: {conversation_id!r}.", param=param, code="conversation_not_found")


def conversation_target(conversation_id: str, metadata: dict[str, Any], param: str) -> str:
    """The selector a conversation's ``metadata.model`` names (a 400 when it names none)."""
    model = metadata.get("model")
    if not isinstance(model, str) or not model or model.startswith(CONVERSATION_PREFIX):
        raise InvalidRequest(
            f"Conversation {conversation_id!r} has no target: create it with metadata.model set to a selector "
            "(bot/id=... or model/name=...) to address it as conversation/id=.", param=param,
            code="conversation_without_target")
    return model


class Responses:
    """Runs Responses requests through ``pipeline``; stores them in ``store``."""

    def __init__(self, pipeline: Pipeline, store: ResponseStore, knowledge: Knowledge | None) -> None:
        self.pipeline = pipeline
        self.store = store
        self.knowledge = knowledge

    # -- preparation -----------------------------------------------------------------------------

    async def prepare(self, request: ResponsesRequest, workspace: Workspace, request_id: str,
                      key_id: str | None = None, observation: Observation | None = None) -> Turn:
        """Load the history, translate the request, run the hosted tools that run before the model.

        ``key_id``: the caller's API key (its usage record and limits, :mod:`chorus.runtime.access`);
        ``observation``: the request's metrics/log/trace record (:mod:`chorus.contract.observe`)."""
        store = request.store is not False
        check_metadata(request.metadata)
        if not isinstance(request.input, str | list):
            raise InvalidRequest("'input' is required: a string or a list of items.", param="input")
        input_items = normalize_items(request.input)
        history: list[Item] = []
        conversation = _conversation_id(request.conversation)
        previous = request.previous_response_id if isinstance(request.previous_response_id, str) else None
        if previous and conversation:
            raise InvalidRequest("Use either 'previous_response_id' or 'conversation', not both.", param="conversation")
        selector = request.model if isinstance(request.model, str) else None
        model: str | None = selector
        if selector is not None and selector.startswith(CONVERSATION_PREFIX):
            addressed = selector.removeprefix(CONVERSATION_PREFIX)
            if conversation and conversation != addressed:
                raise InvalidRequest("'conversation' names another conversation than the model selector.",
                                     param="conversation")
            conversation = addressed
        if previous:
            stored = await self.store.get_response(workspace.id, previous)
            if stored is None:
                raise not_chainable(previous)
            history = [*stored.context, *stored.response.get("output", [])]
        if conversation:
            record = await self.store.get_conversation(workspace.id, conversation)
            if record is None:
                if selector == CONVERSATION_PREFIX + conversation:
                    raise unknown_target(selector)  # the selector 404 every target gives
                raise conversation_not_found(conversation, "conversation")
            if selector is None or selector.startswith(CONVERSATION_PREFIX):
                model = conversation_target(conversation, record.metadata,
                                            "model" if selector is not None else "conversation")
            history = await self.store.list_items(workspace.id, conversation)
        if model is None:
            raise InvalidRequest("'model' is required (a selector such as bot/id=... or model/name=...).", param="model")
        functions, hosted = split_tools(request.tools)
        context = [*history, *input_items]
        chat = chat_request(request, self.pipeline.request_type, model, items_to_messages(context), functions,
                            bool(request.stream))
        ctx = RequestContext(request_id=request_id, workspace=workspace, registry=self.pipeline.registry, request=chat,
                             observation=observation)
        ctx.key_id = key_id
        if request.chorus_progress is True:
            ctx.state["progress"] = True
        if FILE_SEARCH in hosted:
            ctx.sources.extend(await self._file_search(ctx, hosted[FILE_SEARCH], chat))
        if "web_search" in hosted:
            ctx.state[HOSTED_SEARCH_STATE] = self._web_search(hosted["web_search"])
        echoed = selector if selector is not None else model
        return Turn(request=request, ctx=ctx, response_id=new_id("resp_"), created_at=int(time.time()), model=echoed,
                    input_items=input_items, context=context, store=store, conversation=conversation)

    async def _file_search(self, ctx: RequestContext, tool: Item, chat: Any) -> list[Source]:
        """The best chunks of the tool's vector stores for the last user message, as citable sources."""
        knowledge = self.knowledge
        if knowledge is None:
            raise InvalidRequest("file_search is not available: this server has no knowledge service.",
                                 param="tools", code="unsupported_tool")
        workspace = ctx.workspace.id
        store_ids = [str(v) for v in tool["vector_store_ids"]]
        for store_id in store_ids:
            if await knowledge.catalog.get_store(workspace, store_id) is None:
                raise NotFound(f"No such vector store: {store_id!r}.", param="tools.vector_store_ids",
                               code="vector_store_not_found")
        texts = user_texts(chat.messages)
        if not texts:
            return []
        k = tool.get("max_num_results")
        k = k if isinstance(k, int) and 1 <= k <= 50 else 8
        filters = tool.get("filters") if isinstance(tool.get("filters"), dict) else None
        try:
            hits = await knowledge.search(workspace, store_ids, texts[-1], k=k, filters=filters)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid file_search filters: {exc}", param="tools.filters") from None
        sources = []
        for hit in hits:
            chunk = hit.chunk
            sources.append(Source(
                text=chunk.text, title=chunk.title or chunk.source or chunk.file_id,
                url=f"chorus://vector_stores/{chunk.dataset}/files/{chunk.file_id}/chunks/{chunk.index}", id=chunk.id,
                metadata={"kind": FILE_SEARCH, "file_id": chunk.file_id, "filename": chunk.source or chunk.title,
                          "vector_store_id": chunk.dataset, "score": hit.score}))
        return sources

    def _web_search(self, tool: Item) -> SearchOptions:
        engines = self.pipeline.registry.search_engines
        if not engines:
            raise InvalidRequest("web_search is not available: no search engine is configured on this server.",
                                 param="tools", code="unsupported_tool")
        size = tool.get("search_context_size")
        results = {"low": 3, "high": 10}.get(size, 5) if isinstance(size, str) else 5
        return SearchOptions(engine=next(iter(engines)), mode="auto", results=results)

    # -- running ---------------------------------------------------------------------------------

    def _body(self, turn: Turn, status: str, output: list[Item], usage: dict[str, Any] | None, *,
              finish: str | None = None, error: Item | None = None, done: bool = True) -> Item:
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish or "")
        if incomplete and status == "completed":
            status = "incomplete"
        return response_object(turn.request, response_id=turn.response_id, created_at=turn.created_at,
                               model=turn.model, status=status, output=output, usage=usage, include_usage=done,
                               error=error, incomplete=incomplete, conversation=turn.conversation, store=turn.store)

    async def complete(self, turn: Turn) -> Item:
        """Run a non-streamed response; stored (and appended to its conversation) before it is returned."""
        completion = await self.pipeline.complete(turn.ctx)
        choices = completion.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        if not isinstance(message, dict):
            message = {}
        output = output_items(message, turn.ctx.sources)
        body = self._body(turn, "completed", output, completion.get("usage"), finish=choice.get("finish_reason"))
        await self.save(turn, body)
        return body

    async def stream(self, turn: Turn) -> AsyncGenerator[bytes, None]:
        """Yield the Responses events; errors before the first one propagate (an HTTP status)."""
        chat_events = self.pipeline.stream(turn.ctx)
        try:
            first = await anext(chat_events)
            events = EventStream(turn.ctx.sources)
            started = self._body(turn, "in_progress", [], None, done=False)
            yield events.event("response.created", response=started)
            yield events.event("response.in_progress", response=started)
            for event in events.feed(first):
                yield event
            async for raw in chat_events:
                for event in events.feed(raw):
                    yield event
            for event in events.close():
                yield event
            if events.error is not None:
                message = str(events.error.get("message") or "The response failed.")
                body = self._body(turn, "failed", events.output, events.usage,
                                  error={"code": "server_error", "message": message})
                await self.save(turn, body)
                yield events.event("response.failed", response=body)
                return
            body = self._body(turn, "completed", events.output, events.usage, finish=events.finish)
            await self.save(turn, body)
            yield events.event("response.completed", response=body)
        finally:
            await chat_events.aclose()

    async def save(self, turn: Turn, body: Item) -> None:
        """Store the response (``store``) and append the turn to its conversation."""
        workspace = turn.ctx.workspace.id
        if turn.store:
            await self.store.put_response(StoredResponse(
                workspace=workspace, id=turn.response_id, created_at=turn.created_at, response=body,
                input_items=turn.input_items, context=turn.context))
        if turn.conversation:
            added = await self.store.add_items(workspace, turn.conversation, [*turn.input_items, *body["output"]])
            if not added:
                raise ChorusError(f"Conversation {turn.conversation!r} was deleted while this response ran.",
                                  status_code=409, error_type="invalid_request_error", code="conversation_deleted")


def _conversation_id(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        found = value.get("id")
        if not isinstance(found, str) or not found:
            raise InvalidRequest("'conversation.id' must be a conversation id.", param="conversation.id")
        return found
    return None
