"""Chat completions that leave a trace: ``store: true`` and the ``conversation/id=`` selector.

Both are opt-in: a chat request with neither never reaches this module (nor the database). For
those that do, :class:`ChatFollowUp` runs the pipeline as usual and, with the final answer in hand
(non-stream: the completion; stream: the chunks accumulated as they are relayed), stores the
completion and/or appends the turn to its conversation **before** the body or the final ``[DONE]``
is sent, so a follow-up sent right after the answer always sees it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from chorus.contract.context import RequestContext, Workspace
from chorus.contract.errors import InvalidRequest
from chorus.contract.schemas import ChatCompletionRequest, Message
from chorus.contract.targets import unknown_target
from chorus.runtime.pipeline import ECHO_SELECTOR, Pipeline
from chorus.runtime.responses.service import CONVERSATION_PREFIX, conversation_not_found, conversation_target
from chorus.runtime.responses.translate import Item, items_to_messages, messages_to_items, output_items
from chorus.runtime.responses.wire import check_metadata
from chorus.runtime.streaming import DONE, accumulate
from chorus.storage.responses import ResponseStore, StoredChat

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class ChatFollowUp:
    """One chat request's storage work: what to store, which conversation to append to.

    The chat route uses it only for ``store: true`` or a ``conversation/`` selector.
    """

    def __init__(self, store: ResponseStore, *, keep: bool, metadata: dict[str, str], messages: list[Message],
                 conversation: str | None = None, items: list[Item] | None = None, echo: str | None = None) -> None:
        self.store = store
        self.keep = keep
        self.metadata = metadata
        self.messages = messages
        self.conversation = conversation
        self.items = items or []
        self.echo = echo

    @classmethod
    async def open(cls, store: ResponseStore, chat: ChatCompletionRequest,
                   workspace: Workspace) -> tuple[ChatCompletionRequest, ChatFollowUp]:
        """The request to run (a conversation's history in front of the new messages) and its follow-up."""
        keep = chat.store is True
        metadata = check_metadata(chat.metadata)
        if not chat.model.startswith("conversation/"):
            return chat, cls(store, keep=keep, metadata=metadata, messages=chat.messages)
        conversation = chat.model.removeprefix(CONVERSATION_PREFIX)
        record = await store.get_conversation(workspace.id, conversation) if conversation != chat.model else None
        if record is None:  # unknown, another tenant's or malformed: the selector 404 every target gives
            raise unknown_target(chat.model)
        target = conversation_target(conversation, record.metadata, "model")
        history = items_to_messages(await store.list_items(workspace.id, conversation))
        lead = 0  # the client's leading system/developer messages stay first: they layer onto the backstory
        while lead < len(chat.messages) and chat.messages[lead].role in ("system", "developer"):
            lead += 1
        new = chat.messages[lead:]
        if not new:
            raise InvalidRequest("'messages' must contain a new message for the conversation.", param="messages")
        messages = [*chat.messages[:lead], *history, *new]
        follow = cls(store, keep=keep, metadata=metadata, messages=chat.messages, conversation=conversation,
                     items=messages_to_items(new), echo=chat.model)
        return msgspec.structs.replace(chat, model=target, messages=messages), follow

    def bind(self, ctx: RequestContext) -> None:
        """Make the answer echo the selector the client sent."""
        if self.echo is not None:
            ctx.state[ECHO_SELECTOR] = self.echo

    async def finish(self, ctx: RequestContext, completion: dict[str, Any]) -> None:
        """Store the completion and append the turn, as asked."""
        workspace = ctx.workspace.id
        if self.conversation is not None:
            choices = completion.get("choices") or [{}]
            message = choices[0].get("message") if isinstance(choices[0], dict) else None
            reply = output_items(message if isinstance(message, dict) else {}, ctx.sources)
            if not await self.store.add_items(workspace, self.conversation, [*self.items, *reply]):
                raise conversation_not_found(self.conversation, "model")
        if self.keep:
            model = str(completion.get("model") or "")
            await self.store.put_chat(StoredChat(
                workspace=workspace, id=str(completion.get("id") or ctx.completion_id),
                created_at=int(completion.get("created") or ctx.created), model=model, metadata=self.metadata,
                completion=completion, messages=[msgspec.to_builtins(m) for m in self.messages]))

    async def complete_json(self, pipeline: Pipeline, ctx: RequestContext) -> bytes:
        completion = await pipeline.complete(ctx)
        if self.keep:
            completion["metadata"] = self.metadata
        await self.finish(ctx, completion)
        return _encode(completion)

    async def stream(self, pipeline: Pipeline, ctx: RequestContext) -> AsyncGenerator[bytes, None]:
        """The pipeline's events, unchanged; the accumulated answer is stored before ``[DONE]``."""
        gathered = _Gathered()
        events = pipeline.stream(ctx)
        try:
            async for event in events:
                if event == DONE:
                    await self.finish(ctx, gathered.completion(ctx))
                elif event.startswith(b"data: "):
                    gathered.feed(_decode(event[6:]))
                yield event
        finally:
            await events.aclose()


class _Gathered:
    """A streamed chat answer put back together as a ``chat.completion``."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.fragments: dict[int, dict[str, Any]] = {}
        self.finish: Any = None
        self.usage: Any = None
        self.annotations: list[Any] = []
        self.model = ""

    def feed(self, chunk: dict[str, Any]) -> None:
        if "model" in chunk:
            self.model = chunk["model"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.content.append(delta["content"])
            accumulate(self.fragments, delta.get("tool_calls") or ())
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                if isinstance(delta.get("annotations"), list):
                    self.annotations = delta["annotations"]

    def completion(self, ctx: RequestContext) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None, "refusal": None}
        calls = [self.fragments[i] for i in sorted(self.fragments)]
        if calls:
            message["tool_calls"] = calls
        if self.annotations:
            message["annotations"] = self.annotations
        completion: dict[str, Any] = {
            "id": ctx.completion_id, "object": "chat.completion", "created": ctx.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish or "stop", "logprobs": None}],
        }
        if self.usage is not None:
            completion["usage"] = self.usage
        elif ctx.usage is not None:
            completion["usage"] = dict(ctx.usage)
        return completion


def stored_messages(record: StoredChat) -> list[dict[str, Any]]:
    """The request messages of a stored completion in the spec's list shape (each with an id)."""
    out = []
    for i, message in enumerate(record.messages):
        content = message.get("content")
        parts = content if isinstance(content, list) else None
        text = content if isinstance(content, str) else (
            "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text")
            if parts else None)
        out.append({"id": f"{record.id}-{i}", "role": message.get("role", "user"), "content": text,
                    "refusal": None, "name": message.get("name"),
                    "content_parts": [p for p in parts if isinstance(p, dict) and p.get("type") in ("text", "image_url")]
                    if parts else None})
    return out
