"""The prompt formats that let a *base* (not instruction-tuned) model act as a chat model.

Two styles (the provider's ``prompt_style``):

``completion`` (the default): a grounded question-and-answer document, the shape a small base model
continues best::

    You are Ada, Acme's support agent.

    Context:
    Opening hours
    Support is open Monday to Friday, 9am to 5pm.

    Question: When is support open?
    Answer:

* The instructions (the text of the leading ``system``/``developer`` messages) come first, with the
  numbered sources block that Chorus layered into them (:func:`chorus.context.render_sources`) taken
  out and written as ``Context:`` instead: each source's title on a line, then its text, with
  Markdown table rows as plain ``a — b`` lines. Sources are not numbered there: a small model
  answers "[1]" when they are; citations come from the answer's overlap with them instead
  (``[bots.citations] attribute``).
* Earlier turns are ``Question:``/``Answer:`` pairs; a tool result is a ``Result:`` line and a later
  system message a ``Note:`` line. The prompt ends with ``Answer:`` and generation stops at the end
  of the line (:data:`COMPLETION_STOPS`): one short, direct answer.

``chat``: the chat written as a transcript whose natural continuation is the assistant's next turn::

    You are Ada, Acme's support agent.

    Below is a conversation in which the assistant follows the instructions above.

    User: What is your name?
    Assistant:

* The text of the leading ``system``/``developer`` messages comes first, verbatim (several are
  joined by a blank line). Without any, the preamble is just :data:`INTRO_PLAIN`.
* ``user``, ``assistant`` and ``tool``/``function`` messages become ``User:``, ``Assistant:`` and
  ``Tool:`` turns; a later ``system``/``developer`` message becomes a ``System:`` turn.
* Content is a string or the text parts of a content-part array; other parts are dropped. An
  assistant turn that only called tools is written as ``(called name {arguments})``.
* The prompt always ends with ``Assistant:`` (no trailing space); generation stops at the next
  turn label (:data:`TURN_STOPS`) and, optionally, at a blank line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from chorus.context import Source, render_sources
from chorus.schemas import Message, text_of

#: The line after the instructions; it tells the model whose instructions they are.
INTRO_AFTER_INSTRUCTIONS = "Below is a conversation in which the assistant follows the instructions above."
#: The preamble when the request has no instructions.
INTRO_PLAIN = "Below is a conversation between a user and a helpful assistant who answers questions correctly."
LABELS: dict[str, str] = {
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
    "function": "Tool",
    "system": "System",
    "developer": "System",
}
#: Stop sequences that end the assistant's turn where the model starts writing the next one.
TURN_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nTool:", "\nSystem:")
BLANK_LINE = "\n\n"
#: Completion style: the answer is one line; a new line is where a base model starts something else.
COMPLETION_STOPS: tuple[str, ...] = ("\n",)
COMPLETION_LABELS: dict[str, str] = {
    "user": "Question",
    "assistant": "Answer",
    "tool": "Result",
    "function": "Result",
    "system": "Note",
    "developer": "Note",
}
_INSTRUCTION_ROLES = frozenset({"system", "developer"})


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt text for ``messages``, ending with ``"Assistant:"`` (no trailing space)."""
    instructions, conversation = _split_instructions(messages)
    blocks: list[str] = []
    if instructions:
        blocks += [instructions, INTRO_AFTER_INSTRUCTIONS]
    else:
        blocks.append(INTRO_PLAIN)
    turns = [_turn(m) for m in conversation]
    turns.append(f"{LABELS['assistant']}:")
    blocks.append("\n".join(turns))
    return "\n\n".join(blocks)


def render_completion(messages: Sequence[Message], sources: Sequence[Source] = ()) -> str:
    """The completion-style prompt for ``messages`` grounded in ``sources``, ending with ``"Answer:"``.

    ``sources`` are the request's retrieved sources (``ctx.sources``); their rendered block is
    removed from the instructions and laid out as ``Context:``. Without sources the block is kept
    wherever it is (nothing to recognise it by) and no ``Context:`` is written.
    """
    instructions, conversation = _split_instructions(messages)
    blocks: list[str] = []
    context: list[str] = []
    if sources:
        rendered = _clean(render_sources(sources))
        if rendered in instructions:
            instructions = "\n\n".join(p.strip() for p in instructions.split(rendered) if p.strip())
        for source in sources:
            text = _plain_tables(_clean(source.text))
            title = _one_line(source.title)
            context.append(f"{title}\n{text}" if title else text)
    if instructions:
        blocks.append(instructions)
    if context:
        blocks.append("Context:\n" + "\n\n".join(context))
    turns = [_completion_turn(m) for m in conversation]
    turns.append(f"{COMPLETION_LABELS['assistant']}:")
    blocks.append("\n".join(t for t in turns if t))
    return "\n\n".join(blocks)


def _split_instructions(messages: Sequence[Message]) -> tuple[str, Sequence[Message]]:
    """The text of the leading ``system``/``developer`` messages (blank-line joined), and the rest."""
    leading = 0
    while leading < len(messages) and messages[leading].role in _INSTRUCTION_ROLES:
        leading += 1
    instructions = "\n\n".join(t for m in messages[:leading] if (t := _clean(text_of(m.content))))
    return instructions, messages[leading:]


def stop_sequences(request_stop: str | Sequence[str] | None, *, blank_line: bool,
                   style: str = "chat") -> list[str]:
    """The style's stops (turn labels and, if wanted, a blank line; or the end of the line), then the
    request's own non-empty stops (deduplicated)."""
    extra = [request_stop] if isinstance(request_stop, str) else list(request_stop or ())
    if style == "completion":
        own: list[str] = list(COMPLETION_STOPS)
    else:
        own = [*TURN_STOPS, *([BLANK_LINE] if blank_line else [])]
    return list(dict.fromkeys(s for s in [*own, *extra] if s))


def _completion_turn(message: Message) -> str:
    label = COMPLETION_LABELS.get(message.role, "Question")
    text = _one_line(text_of(message.content))
    if message.role == "assistant":
        text = _assistant_text(message, text, _one_line, " ")
        if not text:
            return ""
    return f"{label}: {text}" if text else f"{label}:"


_TABLE_RULE = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def is_table_rule(line: str) -> bool:
    """Whether the stripped ``line`` is a Markdown table's rule row (``| --- | :-: |``) or a rule."""
    return "-" in line and _TABLE_RULE.match(line) is not None


def table_row(line: str) -> str | None:
    """The stripped ``line`` as a plain ``a — b — c`` line if it is a Markdown table row, else ``None``."""
    if line.startswith("|") and line.endswith("|") and len(line) > 1:
        return " — ".join(c for c in (cell.strip() for cell in line[1:-1].split("|")) if c)
    return None


def _plain_tables(text: str) -> str:
    """Markdown table rows as plain lines (``a — b — c``), rule rows dropped: a small model copies
    pipes and dashes into its answer otherwise."""
    lines: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if is_table_rule(stripped):
            continue
        row = table_row(stripped)
        lines.append(line if row is None else row)
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """Whitespace collapsed to single spaces: a turn stays on its line, as the answer will."""
    return " ".join(text.split())


def _turn(message: Message) -> str:
    label = LABELS.get(message.role, "User")
    text = _clean(text_of(message.content))
    if message.role == "assistant":
        text = _assistant_text(message, text, _clean, "\n")
    return f"{label}: {text}" if text else f"{label}:"


def _assistant_text(message: Message, text: str, normalize: Callable[[str], str], separator: str) -> str:
    """An assistant turn's ``text`` (its refusal when it has none) and its tool calls, ``separator``-joined."""
    if not text and isinstance(message.refusal, str):
        text = normalize(message.refusal)
    calls = message.tool_calls if isinstance(message.tool_calls, list) else []
    return separator.join(p for p in (text, *(_describe_call(c) for c in calls)) if p)


def _describe_call(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return ""
    name = str(function.get("name") or "tool")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False) if arguments is not None else ""
    return f"(called {name} {arguments.strip()})".replace(" )", ")")


def _clean(text: str) -> str:
    """Strip the text and normalise line endings so turn boundaries stay recognisable."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
