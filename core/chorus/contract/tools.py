"""The tool driver interface (entry point group ``chorus.tools``).

A ``[[skillsets.tools]]`` table names a driver; Chorus builds one driver instance per table at
startup, passing the table validated into the driver's :attr:`ToolDriver.settings_type` (a
subclass of :class:`ToolSettings`; unknown keys are configuration errors naming the key) and the
skillset's :class:`~chorus.egress.EgressPolicy`. An instance exposes one or more tools (an MCP
server exposes many) and runs calls with a per-call :class:`ToolContext`.

Every outbound HTTP request a tool makes must go through ``ctx.http`` (or a client made with
``egress.client()``), which enforces the egress guard on every connection and redirect.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from chorus.contract.config import Strict
from chorus.contract.errors import ToolError

__all__ = ["ToolContext", "ToolDriver", "ToolError", "ToolSettings", "ToolSpec"]

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from chorus.contract.egress import EgressPolicy


class ToolSettings(Strict):
    """Keys every ``[[skillsets.tools]]`` table may use; drivers subclass to add their own."""

    name: str
    driver: str
    description: str = ""


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One tool as the model sees it."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})

    def definition(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolContext(msgspec.Struct, kw_only=True):
    """Per-call context: who is calling, until when, and the guarded HTTP client."""

    workspace: str
    bot: str | None
    request_id: str
    deadline: float  # time.monotonic() value after which the call is abandoned
    http: httpx.AsyncClient


class ToolDriver(abc.ABC):
    """A configured tool (or set of tools) that Chorus runs server-side."""

    settings_type: ClassVar[type[ToolSettings]] = ToolSettings

    def __init__(self, settings: ToolSettings, egress: EgressPolicy) -> None:
        self.settings = settings
        self.egress = egress

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or spawn what the tool needs. Called once before serving."""

    def watch_tools(self, listener: Callable[[ToolDriver], None]) -> None:
        """Have ``listener(self)`` called whenever :meth:`tools_changed` is (the skillset re-reads :meth:`tools`)."""
        self.__dict__.setdefault("_tool_listeners", []).append(listener)

    def tools_changed(self) -> None:
        """Call after :meth:`tools` starts returning a different list (e.g. an MCP server said so).

        Requests that start afterwards see the new list; calls in flight are unaffected.
        """
        for listener in self.__dict__.get("_tool_listeners", ()):
            listener(self)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    @abc.abstractmethod
    def tools(self) -> list[ToolSpec]:
        """The tools this instance provides (valid after :meth:`start`)."""

    @abc.abstractmethod
    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Run tool ``name`` with decoded ``arguments``.

        Return a string or any JSON-serialisable value (encoded as JSON for the model). Raise
        :class:`ToolError` for failures the model should see; other exceptions are reported to the
        model as an internal tool error without details.
        """
