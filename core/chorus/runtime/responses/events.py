"""The Responses stream: chat completion chunks in, typed Responses events out.

:class:`EventStream` reads the SSE events the pipeline produces for the equivalent chat request
(already shaped, post-processed and annotated by the citations plugin) and writes the Responses
event sequence: ``response.output_item.added`` and ``response.content_part.added`` when a message
starts, ``response.output_text.delta`` per piece of text, ``response.output_text.annotation.added``
per citation as soon as its marker has streamed, ``response.function_call_arguments.delta`` per
piece of a client call, and the ``.done`` events when an item ends. Every event carries the one
response id (in the response or through its item ids) and an increasing ``sequence_number``.
Keep-alive comments pass through unchanged; opt-in progress events become ``chorus.progress``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from chorus.contract.context import Source
from chorus.runtime.responses.translate import Item, annotation, call_item, message_item, new_id, text_part
from chorus.runtime.streaming import DONE

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class EventStream:
    """Translate one response's chat SSE events; :attr:`output` holds the finished items."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources
        self.sequence = 0
        self.output: list[Item] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.error: dict[str, Any] | None = None
        self._message: Item | None = None       # the open message item
        self._text: list[str] = []
        self._annotations: list[Item] = []
        self._chat_annotations = 0                # chat annotations seen (the finish chunk repeats them all)
        self._calls: dict[int, Item] = {}         # open client calls by chat tool call index
        self._call: Item | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        """One SSE event of type ``kind`` with the next sequence number."""
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n"

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The Responses events for one chat SSE event."""
        if raw == DONE:
            return
        if not raw.startswith(b"data: "):  # a keep-alive comment
            yield raw
            return
        payload = _decode(raw[6:])
        if "error" in payload and "choices" not in payload:
            error = payload["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return
        if "chorus" in payload:
            yield self.event("chorus.progress", progress=payload["chorus"])
            return
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for choice in payload.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            finish = choice.get("finish_reason")
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield from self._text_delta(content)
            annotations = delta.get("annotations")
            if isinstance(annotations, list) and annotations:
                fresh = annotations[self._chat_annotations:] if finish else annotations
                self._chat_annotations += len(fresh)
                yield from self._annotate(fresh)
            for piece in delta.get("tool_calls") or ():
                if isinstance(piece, dict):
                    yield from self._call_delta(piece)
            if finish:
                self.finish = finish

    def _text_delta(self, text: str) -> Iterator[bytes]:
        if self._message is None:
            yield from self._close_call()
            self._message = message_item(new_id("msg_"), [], "in_progress")
            self._text, self._annotations = [], []
            index = len(self.output)
            yield self.event("response.output_item.added", output_index=index, item=self._message)
            yield self.event("response.content_part.added", item_id=self._message["id"], output_index=index,
                             content_index=0, part=text_part("", []))
        self._text.append(text)
        yield self.event("response.output_text.delta", item_id=self._message["id"], output_index=len(self.output),
                         content_index=0, delta=text, logprobs=[])

    def _annotate(self, annotations: list[Any]) -> Iterator[bytes]:
        if self._message is None:
            return
        for raw in annotations:
            found = annotation(raw, self.sources)
            if found is None:
                continue
            self._annotations.append(found)
            yield self.event("response.output_text.annotation.added", item_id=self._message["id"],
                             output_index=len(self.output), content_index=0,
                             annotation_index=len(self._annotations) - 1, annotation=found)

    def _call_delta(self, piece: dict[str, Any]) -> Iterator[bytes]:
        index = piece.get("index", 0)
        function = piece.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            yield from self._close_message()
            yield from self._close_call()
            call = call_item(new_id("fc_"), {"id": piece.get("id"), "function": {"name": function.get("name")}},
                             "in_progress")
            self._calls[index] = self._call = call
            yield self.event("response.output_item.added", output_index=len(self.output), item=dict(call))
        elif piece.get("id") and not call["call_id"]:
            call["call_id"] = piece["id"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call["arguments"] += arguments
            yield self.event("response.function_call_arguments.delta", item_id=call["id"],
                             output_index=len(self.output), delta=arguments)

    def _close_message(self) -> Iterator[bytes]:
        message = self._message
        if message is None:
            return
        self._message = None
        index = len(self.output)
        text = "".join(self._text)
        yield self.event("response.output_text.done", item_id=message["id"], output_index=index, content_index=0,
                         text=text, logprobs=[])
        part = text_part(text, list(self._annotations))
        yield self.event("response.content_part.done", item_id=message["id"], output_index=index, content_index=0,
                         part=part)
        done = message_item(message["id"], [part])
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def _close_call(self) -> Iterator[bytes]:
        call = self._call
        if call is None:
            return
        self._call = None
        index = len(self.output)
        yield self.event("response.function_call_arguments.done", item_id=call["id"], name=call["name"],
                         output_index=index, arguments=call["arguments"])
        done = dict(call, status="completed")
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def close(self) -> Iterator[bytes]:
        """The ``.done`` events of the items still open."""
        yield from self._close_message()
        yield from self._close_call()
