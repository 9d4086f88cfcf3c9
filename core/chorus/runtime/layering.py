"""System prompt layering: how a target's instructions and the request's system text combine.

The contract (``docs/layering.md``):

* ``model/name=``: the request's messages pass through unchanged; the request's system/developer
  messages *are* the instructions. Plugin parts and sources, if any, form one system message placed
  before them.
* ``bot/id=``: the upstream receives exactly one leading system message, made of, in order:
  the bot's backstory, ``build_system_prompt`` parts, the numbered sources, then the text of the
  request's leading system/developer messages. Request text extends the backstory, never replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence

from chorus.contract.context import SOURCES_HEADER, Source, render_sources
from chorus.contract.schemas import Message, text_of

INSTRUCTION_ROLES = frozenset({"system", "developer"})


__all__ = ["INSTRUCTION_ROLES", "SOURCES_HEADER", "layer_messages", "render_sources"]


def layer_messages(
    messages: list[Message],
    *,
    backstory: str | None,
    parts: Sequence[str],
    sources: Sequence[Source],
) -> list[Message]:
    """Return the upstream message list for a target; ``backstory`` is ``None`` for plain models."""
    plugin_text = [p for p in parts if p and p.strip()]
    if sources:
        plugin_text.append(render_sources(sources))
    if backstory is None:
        if not plugin_text:
            return messages
        return [Message(role="system", content="\n\n".join(plugin_text)), *messages]
    leading = 0
    while leading < len(messages) and messages[leading].role in INSTRUCTION_ROLES:
        leading += 1
    request_text = [text_of(m.content) for m in messages[:leading]]
    layers = [backstory, *plugin_text, *request_text]
    system = "\n\n".join(layer for layer in layers if layer and layer.strip())
    rest = messages[leading:]
    return [Message(role="system", content=system), *rest] if system else rest
