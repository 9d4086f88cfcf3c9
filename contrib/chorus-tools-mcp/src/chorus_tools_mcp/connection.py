"""One long-lived MCP client session to one server, owned by a dedicated task."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from mcp import Client, types
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, INVALID_REQUEST, REQUEST_TIMEOUT

from chorus_tools_mcp import __version__
from chorus_tools_mcp.transport import open_transport

if TYPE_CHECKING:
    from chorus.egress import EgressPolicy
    from chorus_tools_mcp.redact import Redactor
    from chorus_tools_mcp.settings import McpSettings

log = logging.getLogger("chorus.tools.mcp")

CLIENT_INFO = types.Implementation(name="chorus-tools-mcp", version=__version__)
_MAX_PAGES = 100  # tools/list pages followed before giving up on a paginator that never ends
_GRACE = 1.0  # beyond a call's own timeout, for the SDK to report it
_RELISTEN_DELAY = 1.0  # before opening a dropped subscriptions/listen stream again
_CLOSE_GRACE = 10.0  # for an orderly shutdown (stdio: stdin closed, SIGTERM, SIGKILL) before forcing it


class StartFailed(Exception):
    """The session could not be opened (spawn failed, handshake refused, no answer in time)."""


class ConnectionLost(Exception):
    """The session ended (server exited, transport failed) before the call was answered."""


class CallTimeout(Exception):
    """The server did not answer the call in time (the request was cancelled)."""


class Connection:
    """An MCP session to the server ``settings`` names.

    The SDK's transport and session context managers must be entered and exited by one task, so a
    dedicated task owns them: :meth:`open` starts it and waits for the handshake and the tool
    listing; the task then idles until :meth:`close`, or until the server's message stream ends
    (process exit, transport failure), and tears everything down in order (a stdio server is
    stopped: stdin closed, then SIGTERM, then SIGKILL to its process group). Calls run on the
    caller's task through the session, which serves concurrent calls.

    When the server says its tool list changed (a ``subscriptions/listen`` event, or the
    ``notifications/tools/list_changed`` of servers speaking an earlier protocol version), the
    tools are listed again and passed to ``on_tools``.
    """

    def __init__(self, settings: McpSettings, egress: EgressPolicy, redactor: Redactor,
                 on_tools: Callable[[list[types.Tool]], None] | None = None) -> None:
        self._settings = settings
        self._egress = egress
        self._redactor = redactor
        self._on_tools = on_tools
        self._relisting: asyncio.Task[None] | None = None
        self._relist_again = False
        self._listening = False  # a subscriptions/listen stream delivers the changes
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[list[types.Tool]] | None = None
        self._scope: anyio.CancelScope | None = None
        self._release = asyncio.Event()
        self._closing = False
        self.failure: str | None = None  # why the session ended, when it ended on its own (redacted)

    @property
    def alive(self) -> bool:
        """Whether the session is open and has not ended."""
        return self._client is not None and not self._release.is_set()

    async def open(self, timeout: float) -> list[types.Tool]:
        """Connect, handshake and list the server's tools within ``timeout`` seconds.

        Raises :class:`StartFailed` (message redacted); the connection is then closed.
        """
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(self._ready, timeout), name=f"mcp:{self._settings.name}")
        try:
            return await asyncio.shield(self._ready)
        except BaseException:
            await self.close()
            raise

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> types.CallToolResult:
        """Call server tool ``name``; the server is told to cancel it after ``timeout`` seconds.

        Raises :class:`CallTimeout`, :class:`ConnectionLost`, or :class:`MCPError` for other
        protocol errors.
        """
        client = self._client
        if client is None or self._release.is_set():
            raise ConnectionLost(self.failure or "the session is closed")
        try:
            with anyio.fail_after(timeout + _GRACE):
                return await client.call_tool(name, arguments, read_timeout_seconds=timeout)
        except TimeoutError:
            raise CallTimeout from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise CallTimeout from None
            if exc.code == INVALID_REQUEST and exc.message == "Session terminated":
                # Streamable HTTP: the server no longer knows our session id (it restarted).
                self._lost("the server ended the session")
            elif exc.code != CONNECTION_CLOSED:
                raise
            if self._task is not None:  # let the owner record why, then report it
                await asyncio.wait({self._task}, timeout=_GRACE)
            raise ConnectionLost(self.failure or "the connection closed") from None

    async def close(self) -> None:
        """End the session and wait (bounded) until the owner task has released everything."""
        self._closing = True
        self._release.set()
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            if self._scope is not None:
                self._scope.cancel()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_GRACE)
        if not done and self._scope is not None:
            log.warning("mcp %s: the session did not close in time; cancelling it", self._settings.name)
            self._scope.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_GRACE)

    async def _on_message(self, message: Any) -> None:
        """Session messages: a tool-list change from a server of an earlier protocol version.

        (The SDK also passes ``subscriptions/listen`` events here; :meth:`_listen` handles those.)
        """
        if isinstance(message, types.ToolListChangedNotification) and not self._listening:
            if self._client is None:
                self._relist_again = True  # before the first listing: open() lists again after it
            else:
                self._relist(self._client)

    async def _listen(self, client: Client, following: asyncio.Event) -> None:
        """Follow tool-list changes through ``subscriptions/listen`` (2026-07-28 servers).

        Sets ``following`` once changes are followed (or cannot be). A stream that drops is opened
        again and the tools listed again, since events are not replayed.
        """
        capabilities = client.session.server_capabilities
        try:
            if capabilities is None or capabilities.tools is None or not capabilities.tools.list_changed:
                return
            while not self._release.is_set():
                try:
                    async with client.listen(tools_list_changed=True) as subscription:
                        self._listening = bool(subscription.honored.tools_list_changed)
                        if following.is_set():  # a re-listen: changes may have been missed meanwhile
                            self._relist(client)
                        following.set()
                        if not self._listening:
                            return
                        async for _event in subscription:
                            self._relist(client)
                except SubscriptionLost:
                    self._listening = False
                    await asyncio.sleep(_RELISTEN_DELAY)
                    continue
                return  # the server closed the stream gracefully: it has no more events to send
        except ListenNotSupportedError:
            return  # earlier protocol versions notify through the session (see _on_message)
        except Exception as exc:  # calls go on; the list stays as last seen
            if not self._release.is_set():
                log.info("mcp %s: not following tool-list changes: %s", self._settings.name,
                         self._redactor.text(describe(exc)))
        finally:
            self._listening = False
            following.set()

    def _relist(self, client: Client) -> None:
        """List the tools again (once at a time; a change during a listing lists once more).

        Before :meth:`open` has its first listing, the change is only noted: it lists again after.
        """
        if self._client is None or (self._relisting is not None and not self._relisting.done()):
            self._relist_again = True
            return
        self._relisting = asyncio.create_task(self._relist_loop(client))

    async def _relist_loop(self, client: Client) -> None:
        assert self._on_tools is not None
        while True:
            self._relist_again = False
            try:
                with anyio.fail_after(self._settings.startup_timeout):
                    tools = await _list_tools(client)
            except Exception as exc:
                log.warning("mcp %s: listing the changed tools failed: %s", self._settings.name,
                            self._redactor.text(describe(exc)))
                return
            self._on_tools(tools)
            if not self._relist_again:
                return

    def _lost(self, reason: str = "the server closed the connection") -> None:
        """The server's message stream ended: record why (unless we are closing) and release."""
        if not self._closing and self.failure is None:
            self.failure = reason
        self._release.set()

    async def _own(self, ready: asyncio.Future[list[types.Tool]], timeout: float) -> None:
        """The owner task: enter transport and session, publish the tools, idle, tear down."""
        if self._closing:
            return
        name = self._settings.name
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                self._scope = scope
                transport = open_transport(self._settings, self._egress, self._redactor, self._lost)
                async with Client(transport, cache=None, client_info=CLIENT_INFO,
                                  message_handler=self._on_message) as client:
                    watcher = None
                    try:
                        if self._on_tools is not None:  # follow changes before the first listing: none is missed
                            following = asyncio.Event()
                            watcher = asyncio.create_task(self._listen(client, following))
                            await following.wait()
                        tools = await _list_tools(client)
                        scope.deadline = math.inf
                        self._client = client
                        if not ready.done():
                            ready.set_result(tools)
                        if self._relist_again:  # a change was announced while the first listing ran
                            self._relist(client)
                        await self._release.wait()
                    finally:
                        for task in (watcher, self._relisting):
                            if task is not None and not task.done():
                                task.cancel()
                                await asyncio.gather(task, return_exceptions=True)
            if scope.cancelled_caught and not ready.done():
                ready.set_exception(StartFailed(f"no answer within {timeout:g}s"))
        except Exception as exc:  # the session's end, by whatever cause: report it, never raise
            reason = self._redactor.text(describe(exc))
            if not ready.done():
                ready.set_exception(StartFailed(reason))
            elif not self._closing and self.failure is None:
                self.failure = reason
        finally:
            self._client = None
            self._release.set()
            if self.failure is not None and not self._closing:
                log.warning("mcp %s: session ended: %s", name, self.failure)


async def _list_tools(client: Client) -> list[types.Tool]:
    """Every tool the server lists, following pagination."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def describe(exc: BaseException) -> str:
    """A one-line description of the failure at the root of ``exc`` (exception groups unwrapped)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = next((e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)), exc.exceptions[0])
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
