"""Unit tests: tool specs from MCP tools, results to values, redaction."""

from __future__ import annotations

import base64
import logging

import pytest
from chorus_tools_mcp.convert import error_text, exposed_specs, result_value
from chorus_tools_mcp.redact import Redactor, display_url
from mcp import types

OBJECT = {"type": "object", "properties": {"q": {"type": "string"}}}


def tool(name: str, schema: dict[str, object] | None = None, **extra: object) -> types.Tool:
    return types.Tool(name=name, input_schema=schema or OBJECT, **extra)  # type: ignore[arg-type]


def test_specs_sanitize_names_and_skip_unusable_tools(caplog: pytest.LogCaptureFixture) -> None:
    tools = [
        tool("files/read.text", description="Read a file"),
        tool("files_read_text"),  # clashes with the sanitized name above
        tool("x" * 70),
        tool("scalar", {"type": "string"}),
        tool("titled", title="A title"),
    ]
    with caplog.at_level(logging.WARNING, logger="chorus.tools.mcp"):
        specs = exposed_specs("srv", tools, None, "p_")
    assert list(specs) == ["p_files_read_text", "p_titled"]
    assert specs["p_files_read_text"][0] == "files/read.text"
    assert specs["p_files_read_text"][1].description == "Read a file"
    assert specs["p_titled"][1].description == "A title"
    assert specs["p_titled"][1].parameters == OBJECT
    assert caplog.text.count("mcp srv: skipping tool") == 3


def test_allow_list_filters_by_server_name() -> None:
    specs = exposed_specs("srv", [tool("a"), tool("b"), tool("c")], ["c", "a"], "")
    assert list(specs) == ["a", "c"]


def result(*blocks: types.ContentBlock, structured: object = None, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(blocks), structured_content=structured, is_error=error)


def test_text_blocks_are_joined_and_binary_content_becomes_placeholders() -> None:
    audio = base64.b64encode(b"\x00" * 30).decode()
    value = result_value(
        result(
            types.TextContent(text="first"),
            types.AudioContent(data=audio, mime_type="audio/wav"),
            types.EmbeddedResource(
                resource=types.BlobResourceContents(uri="file:///a.bin", blob=audio, mime_type="application/pdf")
            ),
            types.EmbeddedResource(resource=types.TextResourceContents(uri="file:///b.txt", text="embedded")),
            types.ResourceLink(name="report", uri="https://example.com/r.pdf"),
        ),
        1000,
    )
    assert value.splitlines() == [
        "first",
        "[audio: audio/wav, 30 bytes, not shown]",
        "[resource file:///a.bin: application/pdf, 30 bytes, not shown]",
        "embedded",
        "[resource link: report https://example.com/r.pdf]",
    ]


def test_structured_content_is_used_when_no_block_is_text() -> None:
    assert result_value(result(structured={"rows": [1, 2]}), 1000) == {"rows": [1, 2]}
    image = types.ImageContent(data="AAAA", mime_type="image/png")
    assert result_value(result(image, structured={"ok": True}), 1000) == {"ok": True}
    assert result_value(result(types.TextContent(text="2 rows"), structured={"rows": [1, 2]}), 1000) == "2 rows"
    assert result_value(result(), 1000) == ""


def test_long_results_are_truncated() -> None:
    text = result_value(result(types.TextContent(text="x" * 250)), 100)
    assert text == "x" * 100 + "\n[truncated: 150 more characters]"
    structured = result_value(result(structured={"data": "y" * 300}), 100)
    assert isinstance(structured, str) and structured.endswith("more characters]")


def test_error_text() -> None:
    assert error_text(result(types.TextContent(text=" no such order "), error=True), 100) == "no such order"
    assert "without a message" in error_text(result(error=True), 100)


def test_redactor_masks_long_secrets_everywhere() -> None:
    redact = Redactor(["s3cret-token-1", "short", "s3cret-token-1-longer"])
    assert redact.text("a s3cret-token-1-longer b s3cret-token-1 short") == "a *** b *** short"
    assert redact.value({"k s3cret-token-1": ["s3cret-token-1", 1, True, None]}) == {"k ***": ["***", 1, True, None]}


def test_display_url_drops_userinfo_query_and_fragment() -> None:
    assert display_url("https://u:p@Example.com:8443/mcp?token=x#f") == "https://example.com:8443/mcp"
    assert display_url("http://[::1]:9000/mcp") == "http://[::1]:9000/mcp"
