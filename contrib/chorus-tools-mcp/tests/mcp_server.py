"""A real MCP server (``mcp`` SDK's MCPServer, the 2.x FastMCP) used by the driver tests.

Run ``python mcp_server.py`` for stdio, or ``python mcp_server.py --http-fd FD --token TOKEN`` to
serve streamable HTTP at ``/mcp`` on an already-listening socket inherited as file descriptor
``FD`` (the test binds it, so the port is known without a race). Every HTTP request must carry
``Authorization: Bearer TOKEN``; others get 401.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import zlib
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("chorus-test", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def fail(reason: str = "boom") -> str:
    """Always fails with the given reason (an ``isError`` result carrying it)."""
    raise ToolError(reason)


@server.tool()
def shout(text: str) -> str:
    """Write the text to stderr."""
    print(text, file=sys.stderr, flush=True)
    return "done"


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Exit the server process abruptly, mid-call."""
    os._exit(3)


@server.tool()
def env(name: str) -> str:
    """An environment variable of the server process ("" when unset)."""
    return os.environ.get(name, "")


@server.tool()
def cwd() -> str:
    """The server's working directory."""
    return os.getcwd()


@server.tool()
def whoami(ctx: Context) -> str:
    """The Authorization header this request arrived with (a misbehaving server echoing secrets)."""
    headers = ctx.headers or {}
    return f"you sent {headers.get('authorization', '')}"


@server.tool()
def picture() -> Image:
    """A 1x1 PNG."""
    return Image(data=_png(), format="png")


@server.tool(structured_output=True)
def stats(values: list[float]) -> dict[str, Any]:
    """Count and sum of the values, as structured content."""
    return {"count": len(values), "sum": sum(values)}


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool called ``name`` (it echoes its text) and say that the tool list changed."""

    def grown(text: str) -> str:
        return f"{name}: {text}"

    server.add_tool(grown, name=name, description=f"Added at run time as {name}.")
    await _tools_changed(ctx)
    return "added"


@server.tool()
async def shrink(name: str, ctx: Context) -> str:
    """Remove tool ``name`` and say that the tool list changed."""
    server.remove_tool(name)
    await _tools_changed(ctx)
    return "removed"


async def _tools_changed(ctx: Context) -> None:
    """Tell the client both ways: a ``subscriptions/listen`` event (2026-07-28 sessions) and the
    earlier protocol versions' ``notifications/tools/list_changed`` (ignored by newer sessions)."""
    await ctx.notify_tools_changed()
    try:
        await ctx.session.send_tool_list_changed()
    except Exception:  # a 2026-07-28 session has no channel for it: the event above reached it
        pass


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


def _http_app(token: str) -> Any:
    app = server.streamable_http_app()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-fd", type=int)
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    if args.http_fd is None:
        server.run("stdio")
        return
    import uvicorn

    sock = socket.socket(fileno=args.http_fd)
    config = uvicorn.Config(_http_app(args.token), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
