"""The ``mcp`` tool driver: the tools of one MCP server, run through one long-lived session."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from mcp.shared.exceptions import MCPError

from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSpec
from chorus_tools_mcp.connection import CallTimeout, Connection, ConnectionLost, StartFailed
from chorus_tools_mcp.convert import error_text, exposed_specs, result_value, truncate
from chorus_tools_mcp.redact import Redactor, display_url
from chorus_tools_mcp.settings import McpSettings

if TYPE_CHECKING:
    from chorus.egress import EgressPolicy

log = logging.getLogger("chorus.tools.mcp")


class McpStartError(RuntimeError):
    """The MCP server could not be reached at startup, or does not offer the allow-listed tools."""


class McpTools(ToolDriver):
    """Exposes the tools of one MCP server (stdio command or streamable HTTP URL).

    :meth:`start` connects and lists the server's tools; the session then stays open for the
    process lifetime. The exposed tools follow the server: they are listed again when it says
    its list changed and after each reconnect (the ``tools`` allow-list still applies; an
    allow-listed tool the server dropped is logged and not offered until it returns). A call
    that finds the session ended (the server exited) reconnects first, one attempt per call; a
    session that ends during a call fails that call with a :class:`ToolError`. The values
    :meth:`McpSettings.secrets` lists (headers, credential ``env`` values) are masked in tool
    results, errors and logs.
    """

    settings_type: ClassVar[type[McpSettings]] = McpSettings
    settings: McpSettings

    def __init__(self, settings: McpSettings, egress: EgressPolicy) -> None:
        super().__init__(settings, egress)
        self._redact = Redactor(settings.secrets())
        self._specs: dict[str, tuple[str, ToolSpec]] = {}
        self._connection: Connection | None = None
        self._reconnect = asyncio.Lock()
        self._attempts = 0  # reconnect attempts so far: concurrent callers share one attempt
        self._last_failure = ""
        self._closed = False

    @property
    def where(self) -> str:
        """The server, as logs and errors name it (no secrets)."""
        if self.settings.command is not None:
            return f"stdio {self.settings.command[0]}"
        return display_url(self.settings.url or "")

    async def start(self) -> None:
        """Check egress (URL servers), connect, and publish the (allow-listed, prefixed) tools.

        Raises :class:`McpStartError` when the server cannot be reached within
        ``startup_timeout`` or lacks an allow-listed tool.
        """
        if self.settings.url is not None:
            try:
                await self._check_egress(self.settings.url)
            except ToolError as exc:  # EgressDenied, or a name that does not resolve
                raise McpStartError(self._start_message(self._redact.text(str(exc)))) from None
        connection = Connection(self.settings, self.egress, self._redact, self._tools_listed)
        try:
            tools = await connection.open(self.settings.startup_timeout)
        except StartFailed as exc:
            raise McpStartError(self._start_message(str(exc))) from None
        self._connection = connection
        allow = self.settings.tools
        missing = sorted(set(allow or ()) - {tool.name for tool in tools})
        if missing:
            await self.aclose()
            raise McpStartError(self._start_message(f"the server has no tool named {', '.join(missing)}"))
        self._specs = exposed_specs(self.settings.name, tools, allow, self.settings.prefix)
        log.info("mcp %s: %s offers %d tools, %d exposed", self.settings.name, self.where, len(tools), len(self._specs))

    async def aclose(self) -> None:
        """Close the session (a stdio server is stopped, its process group killed if it lingers)."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def tools(self) -> list[ToolSpec]:
        return [spec for _, spec in self._specs.values()]

    def _tools_listed(self, tools: list[Any]) -> None:
        """A new listing of the server's tools (after a change or a reconnect): expose it if it differs."""
        if self._closed:
            return
        specs = exposed_specs(self.settings.name, tools, self.settings.tools, self.settings.prefix)
        if specs == self._specs:
            return
        missing = sorted(set(self.settings.tools or ()) - {tool.name for tool in tools})
        if missing:
            log.warning("mcp %s: %s no longer offers %s", self.settings.name, self.where, ", ".join(missing))
        self._specs = specs
        log.info("mcp %s: %s now offers %d tools, %d exposed", self.settings.name, self.where, len(tools), len(specs))
        self.tools_changed()

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Call the server's tool behind exposed ``name``, bounded by ``timeout`` and ``ctx.deadline``.

        Returns the result's text (binary content as placeholders) or its structured content;
        an ``isError`` result, a timeout or a lost session raise :class:`ToolError`.
        """
        found = self._specs.get(name)
        if found is None:
            raise ToolError(f"unknown tool {name!r}")
        server_name = found[0]
        connection = await self._live(ctx.deadline)
        budget = self._budget(ctx.deadline)
        try:
            result = await connection.call_tool(server_name, arguments, budget)
        except CallTimeout:
            raise ToolError(f"{name} did not finish within {budget:.3g}s and was cancelled") from None
        except ConnectionLost as exc:
            raise ToolError(
                f"the MCP session ended during the call ({self._redact.text(str(exc))}); the next call reconnects"
            ) from None
        except MCPError as exc:
            raise ToolError(self._redact.text(f"the MCP server refused the call: {exc.message}")) from None
        limit = self.settings.max_result_chars
        if result.is_error:
            raise ToolError(self._redact.text(error_text(result, limit)))
        return self._redact.value(result_value(result, limit))

    async def _live(self, deadline: float) -> Connection:
        """The open session, reconnecting first if it ended (one attempt per call, shared)."""
        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        seen = self._attempts
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                async with self._reconnect:
                    return await self._reconnect_locked(seen, deadline)
        except TimeoutError:
            raise ToolError("the MCP server is reconnecting; no time was left for the call") from None

    async def _reconnect_locked(self, seen: int, deadline: float) -> Connection:
        if self._closed:
            raise ToolError("the MCP tools are shut down")
        if self._connection is not None and self._connection.alive:
            return self._connection
        if self._attempts != seen:  # someone else tried while we waited, and failed
            raise ToolError(f"the MCP server is unavailable: {self._last_failure}")
        self._attempts += 1
        old, self._connection = self._connection, None
        if old is not None:
            await old.close()
        log.info("mcp %s: reconnecting to %s", self.settings.name, self.where)
        connection = Connection(self.settings, self.egress, self._redact, self._tools_listed)
        try:
            tools = await connection.open(min(self.settings.startup_timeout, self._budget(deadline)))
        except StartFailed as exc:
            self._last_failure = str(exc)
            log.warning("mcp %s: reconnecting to %s failed: %s", self.settings.name, self.where, exc)
            raise ToolError(f"the MCP server is unavailable: {exc}") from None
        self._connection = connection
        self._tools_listed(tools)
        return connection

    def _budget(self, deadline: float) -> float:
        """Seconds a call may take: the configured timeout, cut to what is left before ``deadline``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ToolError("no time was left for the call")
        return min(self.settings.timeout, left)

    async def _check_egress(self, url: str) -> None:
        """``egress.check_url(url)`` (it resolves names, blocking) in a worker thread."""
        await asyncio.to_thread(self.egress.check_url, url)

    def _start_message(self, reason: str) -> str:
        return truncate(f"MCP server {self.settings.name!r} ({self.where}) could not start: {reason}", 2000)
