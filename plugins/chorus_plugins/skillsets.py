"""Built-in skillsets plugin: offers a bot's configured tools and runs their calls server-side.

Calls run concurrently (at most ``max_concurrency`` per skillset), each bounded by the skillset's
``tool_timeout``. Every failure (bad arguments, timeout, tool error, crash) becomes a result text
the model can read; the request itself never fails because of a tool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from chorus import hookimpl
from chorus.context import RequestContext
from chorus.registry import Skillset
from chorus.tools import ToolContext, ToolDriver, ToolError

log = logging.getLogger("chorus.tools")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _skillsets(ctx: RequestContext) -> Sequence[Skillset]:
    target = ctx.target
    if target is None or target.bot is None or not target.bot.skillsets:
        return []
    return ctx.registry.skillsets_of(target.bot)


@hookimpl
def list_tools(ctx: RequestContext) -> list[dict[str, Any]] | None:
    """The bot's skillset tools in the OpenAI ``tools`` shape."""
    skillsets = _skillsets(ctx)
    if not skillsets:
        return None
    seen: set[str] = set()
    tools: list[dict[str, Any]] = []
    for skillset in skillsets:
        for spec in skillset.specs():
            if spec.name not in seen:  # the first skillset listed wins a name clash
                seen.add(spec.name)
                tools.append(spec.definition())
    return tools


@hookimpl
async def run_tools(ctx: RequestContext, tool_calls: list[dict[str, Any]]) -> dict[str, str] | None:
    """Run the calls that name a tool of the bot's skillsets."""
    skillsets = _skillsets(ctx)
    if not skillsets:
        return None
    owned: list[tuple[dict[str, Any], Skillset, ToolDriver]] = []
    for call in tool_calls:
        name = call.get("function", {}).get("name", "")
        for skillset in skillsets:
            driver = skillset.owner(name)
            if driver is not None:
                owned.append((call, skillset, driver))
                break
    if not owned:
        return None
    limits = {s.id: asyncio.Semaphore(max(1, s.config.max_concurrency)) for s in skillsets}
    results = await asyncio.gather(*(_observed(ctx, call, s, d, limits[s.id]) for call, s, d in owned))
    return {call["id"]: result for (call, _, _), result in zip(owned, results, strict=True)}


async def _observed(
    ctx: RequestContext, call: dict[str, Any], skillset: Skillset, driver: ToolDriver, limit: asyncio.Semaphore
) -> str:
    """One call in an ``execute_tool`` span (tracing on); an error result counts as a tool error."""
    observation = ctx.observation
    attributes = None
    if observation.trace is not None:
        name = call.get("function", {}).get("name", "")
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                      "gen_ai.tool.call.id": call.get("id", ""), "chorus.skillset": skillset.id}
        if observation.trace.record_content:
            attributes["gen_ai.tool.call.arguments"] = str(call.get("function", {}).get("arguments") or "")
    with observation.span(f"execute_tool {attributes['gen_ai.tool.name']}" if attributes else "", attributes) as span:
        result = await _run_one(ctx, call, skillset, driver, limit)
        failed = result.startswith("Error:")
        if failed:
            observation.tool_errors += 1
        if span is not None and observation.trace is not None:
            if failed:
                observation.trace.failed(span, "tool_error")
            if observation.trace.record_content:
                span.set_attribute("gen_ai.tool.call.result", result)
    return result


async def _run_one(
    ctx: RequestContext, call: dict[str, Any], skillset: Skillset, driver: ToolDriver, limit: asyncio.Semaphore
) -> str:
    function = call.get("function", {})
    name = function.get("name", "")
    raw = function.get("arguments") or "{}"
    try:
        arguments = _decode(raw)
    except msgspec.DecodeError:
        return f"Error: the arguments for {name} are not valid JSON."
    if not isinstance(arguments, dict):
        return f"Error: the arguments for {name} must be a JSON object."
    timeout = skillset.config.tool_timeout
    async with limit:
        tool_ctx = ToolContext(
            workspace=ctx.workspace.id,
            bot=ctx.target.bot.id if ctx.target and ctx.target.bot else None,
            request_id=ctx.request_id,
            deadline=time.monotonic() + timeout,
            http=skillset.http,
        )
        try:
            result = await asyncio.wait_for(driver.call(name, arguments, tool_ctx), timeout)
        except TimeoutError:
            return f"Error: {name} timed out after {timeout:g} seconds."
        except ToolError as exc:
            return f"Error: {exc}"
        except Exception as exc:  # a tool crash must not fail the request
            log.error("request %s: tool %s failed: %s", ctx.request_id, name, type(exc).__name__, exc_info=exc)
            return f"Error: {name} failed internally (request id {ctx.request_id})."
    if isinstance(result, str):
        return result
    try:
        return _encode(result).decode()
    except (TypeError, msgspec.EncodeError):
        log.error("request %s: tool %s returned a %s, which is not JSON", ctx.request_id, name, type(result).__name__)
        return f"Error: {name} returned a result that cannot be shown (request id {ctx.request_id})."
