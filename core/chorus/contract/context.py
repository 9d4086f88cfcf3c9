"""Per-request state shared by the pipeline and every hook."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from chorus.contract.registry import Registry, Workspace
    from chorus.contract.schemas import ChatCompletionRequest
    from chorus.contract.targets import Target


class Source(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A piece of retrieved context the answer may cite, numbered in the system prompt."""

    text: str
    title: str = ""
    url: str = ""
    id: str = ""
    metadata: dict[str, Any] = {}


class Runtime(Protocol):
    """The runtime running a request, as far as a plugin may call back into it (teams do)."""

    @property
    def max_team_depth(self) -> int:
        """How deep bots may delegate to team members (``server.max_team_depth``)."""
        ...

    async def complete(self, ctx: RequestContext) -> dict[str, Any]:
        """Run ``ctx`` as a non-streaming request through the whole pipeline; the ``chat.completion``."""
        ...


class CallBudget:
    """Model calls allowed for one request, shared by a bot and every team member it asks."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def spend(self) -> None:
        self.used += 1


class RequestContext:
    """Everything known about one request while it runs.

    Plugins may read every attribute and keep their own per-request data in :attr:`state`
    (namespaced by plugin name). :attr:`usage` accumulates token usage across every model call.
    """

    __slots__ = (
        "request_id",
        "workspace",
        "registry",
        "request",
        "target",
        "stream",
        "include_usage",
        "created",
        "completion_id",
        "sources",
        "usage",
        "state",
        "deadline",
        "legacy_functions",
        "runtime",
        "budget",
        "depth",
    )

    def __init__(
        self,
        *,
        request_id: str,
        workspace: Workspace,
        registry: Registry,
        request: ChatCompletionRequest,
    ) -> None:
        self.request_id = request_id
        self.workspace = workspace
        self.registry = registry
        self.request = request
        self.target: Target | None = None
        self.stream = bool(request.stream)
        options = request.stream_options
        self.include_usage = bool(self.stream and isinstance(options, dict) and options.get("include_usage"))
        self.created = int(time.time())
        self.completion_id = "chatcmpl-" + request_id.removeprefix("req_")
        self.sources: list[Source] = []
        self.usage: dict[str, Any] | None = None
        self.state: dict[str, Any] = {}
        self.deadline: float | None = None
        self.legacy_functions = False
        self.runtime: Runtime | None = None  # set by the runtime when the request starts
        self.budget: CallBudget | None = None
        self.depth = 0                     # 0 for the client's request, +1 per team delegation

    def field(self, name: str) -> Any:
        """The value of a request field a plugin declared (``request_fields``); ``None`` when not sent."""
        value = getattr(self.request, name, None)
        return None if value is msgspec.UNSET else value

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        """Add one model call's ``usage`` object to the running total."""
        if not usage:
            return
        if self.usage is None:
            self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                self.usage[key] += value
