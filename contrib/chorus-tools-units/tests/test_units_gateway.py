"""End to end: a bot whose skillset uses driver ``units``, through a live Chorus and the official SDK.

The scripted upstream plays the model: it calls the tool, then answers. Chorus runs the calls
server-side and feeds their results back; the client only ever sees the final answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("chorus_tools_units", reason="chorus-tools-units is not installed")

from chorus.testing.config import ACME_KEY
from chorus.testing.fixtures import ServeChorus
from chorus.testing.upstream import Reply, ScriptedUpstream

# No `tools=` passed to serve_chorus: Chorus finds driver "units" through its entry point, as in production.
SKILLSET = """
[[skillsets]]
id = "kitchen"
workspace = "acme"

[[skillsets.tools]]
name = "convert_units"
driver = "units"
customary = "imperial"
precision = 6

[[bots]]
id = "chef"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are a chef. Use convert_units for every conversion."
skillsets = ["kitchen"]
"""


def tool_call(call_id: str, **arguments: Any) -> dict[str, Any]:
    function = {"name": "convert_units", "arguments": json.dumps(arguments)}
    return {"id": call_id, "type": "function", "function": function}


def test_the_model_converts_through_the_tool(scripted_upstream: ScriptedUpstream, serve_chorus: ServeChorus) -> None:
    server = serve_chorus(SKILLSET)
    with server.openai_client(ACME_KEY) as client:
        assert client.models.retrieve("bot/id=chef").model_dump()["capabilities"]["server_tools"] == ["convert_units"]
        scripted_upstream.push(
            Reply(content=None, tool_calls=[
                tool_call("c1", value=2, from_unit="pints", to_unit="mL"),
                tool_call("c2", value=350, from_unit="°F", to_unit="°C"),
                tool_call("c3", value=1, from_unit="kg", to_unit="mL"),
            ]),
            Reply(content="Use 1136.5 mL of stock and bake at 177 °C."),
        )
        completion = client.chat.completions.create(
            model="bot/id=chef", messages=[{"role": "user", "content": "2 pints of stock at 350 °F?"}]
        )

        # The client sees the answer, never the server-side tool calls.
        message = completion.choices[0].message
        assert message.content == "Use 1136.5 mL of stock and bake at 177 °C."
        assert message.tool_calls is None and completion.choices[0].finish_reason == "stop"

        # The model was offered the tool as the driver describes it.
        (offered,) = scripted_upstream.requests[0].json["tools"]
        assert offered["function"]["name"] == "convert_units"
        assert offered["function"]["parameters"]["required"] == ["value", "from_unit", "to_unit"]

        # The second model call received every tool result, the error included as readable text.
        assert len(scripted_upstream.requests) == 2
        sent = scripted_upstream.requests[1].json["messages"]
        results = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
        assert json.loads(results["c1"]) == {
            "value": 1136.52, "unit": "mL", "exact": False, "text": "2 imp pt ≈ 1136.52 mL",
        }
        assert json.loads(results["c2"]) == {
            "value": 176.667, "unit": "°C", "exact": False, "text": "350 °F ≈ 176.667 °C",
        }
        assert results["c3"] == "Error: cannot convert kg (mass) to mL (volume)"
