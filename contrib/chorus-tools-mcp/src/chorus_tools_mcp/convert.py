"""Translation between MCP and Chorus: server tools to :class:`ToolSpec`, call results to values."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from mcp import types

from chorus.tools import ToolSpec

log = logging.getLogger("chorus.tools.mcp")

# What OpenAI-compatible APIs accept as a function name.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def exposed_specs(
    entry: str, tools: list[types.Tool], allow: list[str] | None, prefix: str
) -> dict[str, tuple[str, ToolSpec]]:
    """Exposed name -> (server tool name, spec) for the server tools that pass ``allow``.

    The exposed name is ``prefix`` + the server name with characters an OpenAI function name cannot
    hold replaced by ``_``. A tool whose name is still unusable (too long, clashing) or whose input
    schema is not a JSON object schema is skipped with a warning naming it.
    """
    exposed: dict[str, tuple[str, ToolSpec]] = {}
    for tool in tools:
        if allow is not None and tool.name not in allow:
            continue
        name = prefix + _INVALID.sub("_", tool.name)
        schema = tool.input_schema
        if not _NAME.fullmatch(name):
            log.warning("mcp %s: skipping tool %r: %r is not a valid function name", entry, tool.name, name)
        elif name in exposed:
            log.warning("mcp %s: skipping tool %r: its name %r clashes with another tool", entry, tool.name, name)
        elif not isinstance(schema, dict) or schema.get("type") != "object":
            log.warning("mcp %s: skipping tool %r: its input schema is not an object schema", entry, tool.name)
        else:
            description = tool.description or tool.title or ""
            exposed[name] = (tool.name, ToolSpec(name=name, description=description, parameters=dict(schema)))
    return exposed


def render_blocks(blocks: list[types.ContentBlock]) -> tuple[str, bool]:
    """The content blocks as text (binary payloads become short placeholders), and whether any was text."""
    parts: list[str] = []
    has_text = False
    for block in blocks:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
            has_text = True
        elif isinstance(block, types.ImageContent | types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {_decoded_size(block.data)} bytes, not shown]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
                has_text = True
            else:
                mime = resource.mime_type or "application/octet-stream"
                parts.append(f"[resource {resource.uri}: {mime}, {_decoded_size(resource.blob)} bytes, not shown]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link: {block.name} {block.uri}]")
        else:  # a content type newer than this driver
            parts.append(f"[{getattr(block, 'type', 'unknown')} content, not shown]")
    return "\n".join(parts), has_text


def result_value(result: types.CallToolResult, limit: int) -> Any:
    """The tool result for the model: the content's text, else the structured content.

    Text content wins because it is what the server wrote for a reader (structured content usually
    duplicates it as ``{"result": ...}``); structured content is used when no block is text.
    Results longer than ``limit`` characters (JSON-encoded for structured ones) are cut to a string.
    """
    text, has_text = render_blocks(result.content)
    if result.structured_content is not None and not has_text:
        encoded = msgspec.json.encode(result.structured_content).decode()
        return truncate(encoded, limit) if len(encoded) > limit else result.structured_content
    return truncate(text, limit)


def error_text(result: types.CallToolResult, limit: int) -> str:
    """The message of an ``isError`` result."""
    text, _ = render_blocks(result.content)
    return truncate(text.strip() or "the tool reported an error without a message", limit)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated: {len(text) - limit} more characters]"


def _decoded_size(data: str) -> int:
    """Approximate byte size of base64 ``data``."""
    return len(data) * 3 // 4 - data[-2:].count("=")
