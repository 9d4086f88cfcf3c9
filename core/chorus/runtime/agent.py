"""The agent loop: call the model, run the server tools it calls, call it again, until it answers.

One loop serves both paths. The non-streaming path hands it a model call that returns the whole
response; the streaming path hands it one that relays content chunks to the client as they arrive
and accumulates tool calls. The loop runs only for targets that offer server tools (``list_tools``);
other requests make their single model call directly.

Server calls and their results never reach the client. A turn that ends with client calls after
hidden steps has those steps parked (:mod:`chorus.storage.turns`) under the client calls' ids, and
:mod:`chorus.runtime.resume` restores them when the client sends its results. Past
``max_tool_steps`` the model is called once more with ``tool_choice: "none"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any

import msgspec

from chorus.contract.context import RequestContext
from chorus.contract.errors import BudgetExhausted
from chorus.contract.schemas import ChatCompletionRequest, Message
from chorus.runtime.streaming import KEEPALIVE, progress_event
from chorus.storage.turns import ParkedTurn, TurnStore


class Prepared(msgspec.Struct, kw_only=True):
    """The upstream request and what the agent loop needs to know about it."""

    body: ChatCompletionRequest
    server_tools: frozenset[str]
    max_steps: int


class Turn:
    """What one model call produced: content, whole tool calls, finish reason (and, non-stream, the response)."""

    __slots__ = ("calls", "choice", "client_calls", "content", "finish", "response")

    def __init__(self) -> None:
        self.content: Any = None
        self.calls: list[dict[str, Any]] = []
        self.finish: Any = None
        self.choice: dict[str, Any] = {}          # the (last) upstream choice, for its other fields
        self.response: dict[str, Any] = {}        # non-stream: the whole upstream response
        self.client_calls: list[dict[str, Any]] = []  # set by the loop: what the client gets


ModelCall = Callable[[ChatCompletionRequest, Turn], AsyncIterator[bytes]]
RunTools = Callable[[RequestContext, list[dict[str, Any]]], Awaitable[dict[str, str]]]


def spend(ctx: RequestContext) -> None:
    """Count one model call against the request budget; team members stop when it is gone."""
    if ctx.budget is not None:
        if ctx.depth and ctx.budget.exhausted:
            raise BudgetExhausted(f"The request's budget of {ctx.budget.limit} model calls is used up.")
        ctx.budget.spend()


def tool_name(call: dict[str, Any]) -> Any:
    function = call.get("function")
    return function.get("name") if isinstance(function, dict) else None


class AgentLoop:
    """Runs one request's model calls and server tool rounds. Create one per request."""

    __slots__ = ("ctx", "hidden", "keepalive", "prepared", "run_tools", "steps", "turn", "turns")

    def __init__(self, ctx: RequestContext, prepared: Prepared, *, run_tools: RunTools, turns: TurnStore,
                 keepalive: float | None = None) -> None:
        """``keepalive``: seconds between keep-alive events while tools run (streaming only; ``None``: none)."""
        self.ctx = ctx
        self.prepared = prepared
        self.run_tools = run_tools
        self.turns = turns
        self.keepalive = keepalive
        self.steps = 0
        self.hidden: list[Message] = []
        self.turn = Turn()

    async def run(self, call_model: ModelCall) -> AsyncIterator[bytes]:
        """Loop until the model answers or hands calls to the client.

        Yields what ``call_model`` yields, plus keep-alives and opt-in progress events while tools
        run (streaming). Afterwards :attr:`turn` is the last model call, with ``client_calls`` and
        ``finish`` decided.
        """
        ctx, prepared = self.ctx, self.prepared
        server_tools = prepared.server_tools
        streaming = self.keepalive is not None
        while True:
            spend(ctx)
            turn = self.turn = Turn()
            async for event in call_model(prepared.body, turn):
                yield event
            server_calls = [c for c in turn.calls if tool_name(c) in server_tools]
            if server_calls and self.steps < prepared.max_steps:
                self.steps += 1
                observation = ctx.observation
                observation.tool_calls += len(server_calls)
                started = perf_counter()
                progress = streaming and bool(ctx.state.get("progress"))
                if progress:
                    for call in server_calls:
                        yield progress_event(ctx, {"type": "tool.started", "name": tool_name(call), "step": self.steps})
                if streaming:
                    results: dict[str, str] = {}
                    async for event in self._tools_with_keepalive(server_calls, results):
                        yield event
                else:
                    results = await self.run_tools(ctx, server_calls)
                if not ctx.depth:  # members' tool rounds run inside their lead's
                    observation.tool_seconds += perf_counter() - started
                results = {c["id"]: results.get(c["id"], _unanswered(c)) for c in server_calls}
                if progress:
                    for call in server_calls:
                        yield progress_event(ctx, {"type": "tool.finished", "name": tool_name(call), "step": self.steps})
                client_calls = await self._advance(turn, results)
                if not client_calls:
                    continue
                turn.client_calls, turn.finish = client_calls, "tool_calls"
            else:
                turn.client_calls = [c for c in turn.calls if tool_name(c) not in server_tools]
                if not turn.client_calls and turn.finish == "tool_calls":
                    turn.finish = "stop"
                await self._park_client_turn(turn)
            return

    async def _tools_with_keepalive(self, calls: list[dict[str, Any]], into: dict[str, str]) -> AsyncIterator[bytes]:
        """Run the calls, yielding a keep-alive event whenever they take longer than the interval."""
        task = asyncio.ensure_future(self.run_tools(self.ctx, calls))
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=self.keepalive)
                if not done:
                    yield KEEPALIVE
            into.update(task.result())
        finally:
            if not task.done():
                task.cancel()

    async def _advance(self, turn: Turn, results: dict[str, str]) -> list[dict[str, Any]]:
        """Record one tool round. Returns the client calls left (empty: call the model again)."""
        calls = turn.calls
        assistant = Message(role="assistant", content=turn.content or None, tool_calls=calls)
        tool_messages = [
            Message(role="tool", tool_call_id=c["id"], content=results[c["id"]]) for c in calls if c["id"] in results
        ]
        client_calls = [c for c in calls if c["id"] not in results]
        if client_calls:
            await self.turns.park(
                self.ctx.workspace.id, [c["id"] for c in client_calls],
                ParkedTurn(hidden=list(self.hidden), assistant=assistant, results=tool_messages),
            )
            return client_calls
        self.hidden.extend([assistant, *tool_messages])
        changes: dict[str, Any] = {"messages": [*self.prepared.body.messages, assistant, *tool_messages]}
        if self.steps >= self.prepared.max_steps:
            changes["tool_choice"] = "none"
        self.prepared.body = msgspec.structs.replace(self.prepared.body, **changes)
        return []

    async def _park_client_turn(self, turn: Turn) -> None:
        """A turn that ends with client calls after hidden steps: park those steps for the resume."""
        calls = turn.client_calls
        if self.hidden and calls:
            assistant = Message(role="assistant", content=turn.content or None, tool_calls=calls)
            await self.turns.park(self.ctx.workspace.id, [c["id"] for c in calls],
                                  ParkedTurn(hidden=list(self.hidden), assistant=assistant, results=[]))


def _unanswered(call: dict[str, Any]) -> str:
    return f"Error: no server tool answered the call to {tool_name(call)!r}."
