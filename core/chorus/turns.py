"""Parked agent turns: hidden server-side steps kept while the client runs its own tools.

When a turn ends with client tool calls after (or beside) server tool calls, the client sees only
its calls. The hidden messages are parked here, keyed by ``(workspace, client tool call id)``, and
restored when the client sends the results back, so the model sees the whole story. Entries expire
after ``ttl`` seconds; the store holds at most ``max_entries`` turns (oldest dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import msgspec

from chorus.schemas import Message


class ParkedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """What replaces the client's copy of the assistant message on resume."""

    hidden: list[Message]
    assistant: Message
    results: list[Message]

    def restore(self) -> list[Message]:
        """Hidden steps, the full assistant message, then the server tool results."""
        return [*self.hidden, self.assistant, *self.results]


class TurnStore:
    """An in-process, bounded, expiring map from client tool call ids to parked turns."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, ParkedTurn]] = OrderedDict()

    def park(self, workspace: str, call_ids: list[str], turn: ParkedTurn) -> None:
        """Keep ``turn`` under every client call id of it."""
        expires = time.monotonic() + self.ttl
        for call_id in call_ids:
            self._entries[(workspace, call_id)] = (expires, turn)
            self._entries.move_to_end((workspace, call_id))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def take(self, workspace: str, call_id: str) -> ParkedTurn | None:
        """The parked turn for a client call id of this workspace, if present and not expired."""
        entry = self._entries.get((workspace, call_id))
        if entry is None:
            return None
        expires, turn = entry
        if expires < time.monotonic():
            del self._entries[(workspace, call_id)]
            return None
        return turn

    def __len__(self) -> int:
        return len(self._entries)


def restore_messages(messages: list[Message], workspace: str, store: TurnStore) -> list[Message]:
    """Replace client copies of parked assistant messages by the full hidden story."""
    if not len(store):
        return messages
    out: list[Message] = []
    changed = False
    for message in messages:
        if message.role == "assistant" and isinstance(message.tool_calls, list) and message.tool_calls:
            call_id = message.tool_calls[0].get("id")
            turn = store.take(workspace, call_id) if isinstance(call_id, str) else None
            if turn is not None:
                out.extend(turn.restore())
                changed = True
                continue
        out.append(message)
    return out if changed else messages
