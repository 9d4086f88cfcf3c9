"""Chorus tool driver ``mcp``: the tools of an MCP server (stdio command or streamable HTTP URL).

Registered as entry point ``mcp`` in group ``chorus.tools``. One ``[[skillsets.tools]]`` table
with ``driver = "mcp"`` names one server; its tools (optionally allow-listed and prefixed) become
tools of the skillset, run through one long-lived MCP session.
"""

__version__ = "0.1.0"

from chorus_tools_mcp.driver import McpStartError, McpTools
from chorus_tools_mcp.settings import McpSettings

__all__ = ["McpSettings", "McpStartError", "McpTools", "__version__"]
