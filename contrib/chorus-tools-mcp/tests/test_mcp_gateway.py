"""End to end: a bot whose skillset is a live MCP server, through a live Chorus and the official SDK."""

from __future__ import annotations

import json
import sys

from mcp_testing import SERVER

from chorus.testing.config import ACME_KEY
from chorus.testing.fixtures import ServeChorus
from chorus.testing.upstream import Reply, ScriptedUpstream

SKILLSET = f"""
[[skillsets]]
id = "mcp-tools"
workspace = "acme"
[[skillsets.tools]]
name = "local"
driver = "mcp"
command = {json.dumps([sys.executable, str(SERVER)])}
tools = ["add", "echo"]
prefix = "math_"

[[bots]]
id = "mathbot"
workspace = "acme"
model = "up/gpt-test"
skillsets = ["mcp-tools"]
"""


def test_mcp_tools_become_the_bots_tools(scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus) -> None:
    with serve_chorus(SKILLSET).openai_client(ACME_KEY, timeout=60) as client:
        assert client.models.retrieve("bot/id=mathbot").model_dump()["capabilities"]["server_tools"] == ["math_add", "math_echo"]
        call = {"id": "c1", "type": "function", "function": {"name": "math_add", "arguments": '{"a": 2, "b": 40}'}}
        scripted_upstream.push(Reply(content=None, tool_calls=[call]), Reply(content="It is 42."))
        chunks = list(client.chat.completions.create(
            model="bot/id=mathbot", messages=[{"role": "user", "content": "2+40?"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It is 42."
        assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
        offered = [t["function"]["name"] for t in scripted_upstream.requests[0].json["tools"]]
        assert offered == ["math_add", "math_echo"]
        tool_message = scripted_upstream.requests[-1].json["messages"][-1]
        assert tool_message == {"role": "tool", "content": "42", "tool_call_id": "c1"}
