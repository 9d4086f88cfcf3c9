"""Settings of one ``driver = "mcp"`` table: which MCP server, which of its tools, how long to wait."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from chorus.secrets import Secret
from chorus.tools import ToolSettings

PREFIX = re.compile(r"[A-Za-z0-9_-]*")
CREDENTIAL_KEY = re.compile(r"(?i)token|key|secret|passw|pwd|auth|credential|cookie|session|private")

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class McpSettings(ToolSettings):
    """An MCP server whose tools a skillset exposes.

    Exactly one of ``command`` (a stdio server: argv, with ``env`` and ``cwd``) or ``url`` (a
    streamable HTTP endpoint, with ``headers``). ``env`` and ``headers`` values are
    :class:`~chorus.secrets.Secret` (hidden from reprs); :meth:`secrets` lists those masked in
    logs, errors and tool results.
    """

    command: list[str] | None = None
    env: dict[str, Secret] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, Secret] = {}
    tools: list[str] | None = None
    prefix: str = ""
    timeout: Seconds = 60.0
    startup_timeout: Seconds = 30.0
    max_result_chars: Annotated[int, msgspec.Meta(ge=100)] = 100_000

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of `command` (stdio server) or `url` (streamable HTTP server)")
        if self.command is not None:
            if not self.command or not self.command[0]:
                raise ValueError("`command` must name the program to run")
            if self.headers:
                raise ValueError("`headers` applies to `url` servers only")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("`url` must be an http:// or https:// URL")
            if parts.username or parts.password:
                raise ValueError("`url` must not carry credentials; put them in `headers`")
            if self.env or self.cwd is not None:
                raise ValueError("`env` and `cwd` apply to `command` servers only")
        if not PREFIX.fullmatch(self.prefix):
            raise ValueError("`prefix` may contain only letters, digits, `_` and `-`")

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"http"``."""
        return "stdio" if self.command is not None else "http"

    def secrets(self) -> list[str]:
        """The values to mask in everything the driver reports.

        Every header value (and, for ``Scheme credentials`` values such as ``Bearer x``, the
        credentials alone), and the values of ``env`` keys that name a credential (``*TOKEN*``,
        ``*KEY*``, ``*SECRET*``, ``*PASSWORD*``, ...): other ``env`` values are often ordinary
        words (``debug``, ``true``) that masking would garble.
        """
        values: list[str] = []
        for header in self.headers.values():
            value = header.get().strip()
            values.append(value)
            scheme, _, credentials = value.partition(" ")
            if credentials.strip() and scheme.isalpha():
                values.append(credentials.strip())
        values.extend(value.get() for key, value in self.env.items() if CREDENTIAL_KEY.search(key))
        return [value for value in values if value]
