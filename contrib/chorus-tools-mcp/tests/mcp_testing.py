"""Helpers shared by the tests: settings from raw tables, the HTTP test server, /proc probes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chorus_tools_mcp import McpSettings

from chorus.config import convert

SERVER = Path(__file__).with_name("mcp_server.py")
TOKEN = "tok-5ecret-value-0123456789"


def settings(**raw: Any) -> McpSettings:
    """Validate a ``[[skillsets.tools]]`` table the way Chorus does."""
    table = {"name": "test-mcp", "driver": "mcp", **raw}
    return convert(table, McpSettings, "skillsets[0].tools[0]")


def stdio_table(**raw: Any) -> dict[str, Any]:
    return {"command": [sys.executable, str(SERVER)], **raw}


class HttpServer:
    """The test server as a subprocess on a socket this process keeps listening (a stable port)."""

    def __init__(self) -> None:
        self.sock = self._listen(0)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _listen(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        return sock

    def down(self) -> None:
        """Stop the server and close the port (connections are refused)."""
        self.close()

    def up(self) -> None:
        """Listen on the same port again and start a fresh server."""
        self.sock = self._listen(self.port)
        self.start()

    def start(self) -> None:
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "--http-fd", str(fd), "--token", TOKEN], pass_fds=[fd]
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        self.sock.close()


def process_state(pid: int) -> str | None:
    """The ``/proc`` state letter of ``pid`` (``Z`` for a zombie), or ``None`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and process_state(int(entry.name)) != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``predicate`` until it holds (``AssertionError`` after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
