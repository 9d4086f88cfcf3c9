"""Built-in teams plugin: a bot's ``team`` members are offered to it as ``ask_<member>`` tools.

A member runs its full pipeline (backstory, datasets, skillsets, search, its own team, its model)
on the task the lead gives it; its answer, its sources and its usage flow back to the lead. Member
citation markers are renumbered into the lead's source numbering, so the lead's final answer can
cite the members' sources and the client receives them as annotations. Members asked in the same
turn run concurrently. Delegation depth is limited by ``server.max_team_depth``; every model call of
the request counts against the lead bot's ``max_model_calls``; cycles are rejected at startup.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec

from chorus import hookimpl
from chorus.config import BotConfig
from chorus.context import RequestContext
from chorus.errors import ChorusError
from chorus.schemas import ChatCompletionRequest, Message
from chorus.targets import BOT_PREFIX

PREFIX = "ask_"
MARKER = re.compile(r"\[(\d{1,3})\]")


def tool_name(member: str) -> str:
    """``ask_<member id>`` limited to the characters and length tool names allow."""
    return (PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", member))[:64]


def _members(ctx: RequestContext) -> dict[str, BotConfig]:
    target = ctx.target
    if target is None or target.bot is None or not target.bot.team:
        return {}
    found = {}
    for member_id in target.bot.team:
        member = ctx.registry.bot(target.bot.workspace, member_id)
        if member is not None:
            found[tool_name(member_id)] = member
    return found


@hookimpl
def list_tools(ctx: RequestContext) -> list[dict[str, Any]] | None:
    """One ``ask_<member>`` tool per team member."""
    members = _members(ctx)
    if not members:
        return None
    return [
        {"type": "function", "function": {
            "name": name,
            "description": f"Ask {member.name or member.id}"
                           + (f" ({member.description})" if member.description else "")
                           + " to do a task; returns its answer with numbered sources you can cite.",
            "parameters": {
                "type": "object",
                "properties": {"task": {"type": "string", "description": "The task or question, self-contained"}},
                "required": ["task"],
            },
        }}
        for name, member in members.items()
    ]


@hookimpl
async def run_tools(ctx: RequestContext, tool_calls: list[dict[str, Any]]) -> dict[str, str] | None:
    """Run the asked members concurrently, then merge their sources in call order."""
    members = _members(ctx)
    calls = [c for c in tool_calls if c.get("function", {}).get("name") in members]
    if not calls:
        return None
    outcomes = await asyncio.gather(*(_ask(ctx, members[c["function"]["name"]], c) for c in calls))
    results: dict[str, str] = {}
    for call, (answer, member_ctx) in zip(calls, outcomes, strict=True):
        if member_ctx is None:
            results[call["id"]] = answer
            continue
        ctx.add_usage(member_ctx.usage)
        offset = len(ctx.sources)
        ctx.sources.extend(member_ctx.sources)
        renumbered = renumber(answer, offset, len(member_ctx.sources))
        if member_ctx.sources:
            listing = "\n".join(f"[{offset + i}] {s.title} <{s.url}>" for i, s in enumerate(member_ctx.sources, start=1))
            renumbered += f"\n\nSources:\n{listing}"
        results[call["id"]] = renumbered
    return results


def renumber(text: str, offset: int, count: int) -> str:
    """Shift citation markers ``[1]``..``[count]`` of a member's answer by ``offset``."""
    return MARKER.sub(lambda m: f"[{int(m.group(1)) + offset}]" if 1 <= int(m.group(1)) <= count else m.group(0), text)


async def _ask(ctx: RequestContext, member: BotConfig, call: dict[str, Any]) -> tuple[str, RequestContext | None]:
    try:
        arguments = msgspec.json.decode(call["function"].get("arguments") or "{}")
    except msgspec.DecodeError:
        return "Error: the arguments are not valid JSON.", None
    task = arguments.get("task") if isinstance(arguments, dict) else None
    if not isinstance(task, str) or not task.strip():
        return "Error: a non-empty 'task' is required.", None
    runtime = ctx.runtime
    if runtime is None:
        return "Error: team members can only be asked while a request runs.", None
    if ctx.depth + 1 > runtime.max_team_depth:
        return f"Error: delegation deeper than {runtime.max_team_depth} levels is not allowed.", None
    if ctx.budget is not None and ctx.budget.exhausted:
        return "Error: this request's model-call budget is used up; answer with what you have.", None
    request = ChatCompletionRequest(model=BOT_PREFIX + member.id, messages=[Message(role="user", content=task)])
    # The member shares its lead's observation: its calls, tools and retrieval count for the request.
    observation = ctx.observation
    member_ctx = RequestContext(request_id=ctx.request_id, workspace=ctx.workspace, registry=ctx.registry, request=request,
                                observation=observation)
    member_ctx.budget = ctx.budget
    member_ctx.ledger = ctx.ledger  # the member's calls are the request's usage and cost
    member_ctx.key_id = ctx.key_id
    member_ctx.depth = ctx.depth + 1
    member_ctx.state["progress"] = False
    attributes = None
    if observation.trace is not None:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": member.id,
                      "gen_ai.agent.name": member.name or member.id, "gen_ai.tool.call.id": call.get("id", ""),
                      "chorus.team.depth": member_ctx.depth}
    with observation.span(f"invoke_agent {member.id}" if attributes else "", attributes) as span:
        try:
            response = await runtime.complete(member_ctx)
        except ChorusError as exc:
            ctx.add_usage(member_ctx.usage)  # calls made before the failure still count
            observation.tool_errors += 1
            if span is not None and observation.trace is not None:
                observation.trace.failed(span, exc.code or exc.error_type)
            return f"Error: {member.name or member.id} could not answer ({exc.message})", None
        if span is not None and member_ctx.usage:
            span.set_attributes({"gen_ai.usage.input_tokens": member_ctx.usage["prompt_tokens"],
                                 "gen_ai.usage.output_tokens": member_ctx.usage["completion_tokens"]})
    choices = response.get("choices") or []
    content = (choices[0].get("message") or {}).get("content") if choices else None
    return (content if isinstance(content, str) else ""), member_ctx
