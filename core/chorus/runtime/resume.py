"""Resuming a parked agent turn: the client's copy of the history gets its hidden steps back.

When a turn ends with client tool calls after (or beside) server tool calls, the client sees only
its calls; the hidden steps are parked (:mod:`chorus.storage.turns`) under the turn's first tool
call id. When the client sends its results, :func:`restore_messages` puts them back in place.
"""

from __future__ import annotations

from collections.abc import Iterable

from chorus.contract.schemas import Message
from chorus.storage.turns import TurnStore


def _parking_id(message: Message) -> str | None:
    """The id a turn ending in this message would be parked under: its first tool call's id."""
    if message.role == "assistant" and isinstance(message.tool_calls, list) and message.tool_calls:
        call_id = message.tool_calls[0].get("id")
        if isinstance(call_id, str):
            return call_id
    return None


def resumed_call_ids(messages: Iterable[Message]) -> list[str]:
    """The first tool call id of every assistant message with tool calls: where a turn may be parked."""
    return [call_id for message in messages if (call_id := _parking_id(message)) is not None]


async def restore_messages(messages: list[Message], workspace: str, store: TurnStore,
                           call_ids: list[str]) -> list[Message]:
    """Replace client copies of parked assistant messages by the full hidden story.

    ``call_ids`` is :func:`resumed_call_ids` of ``messages`` (callers skip the await when empty).
    """
    turns = await store.take_many(workspace, call_ids)
    if not turns:
        return messages
    out: list[Message] = []
    for message in messages:
        call_id = _parking_id(message)
        turn = turns.get(call_id) if call_id is not None else None
        if turn is not None:
            out.extend(turn.restore())
        else:
            out.append(message)
    return out
