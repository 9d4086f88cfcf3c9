"""The OpenAI Agents SDK (its default Responses model) running an agent whose model is a Chorus bot.

The SDK's default model provider reads ``bot/id=...`` as a provider prefix ``bot/`` and refuses it
before sending anything (``Unknown prefix: bot``). The documented way (docs/responses.md) is its own
setting for that: ``MultiProvider(unknown_prefix_mode="model_id")`` passes the selector through
unchanged; constructing ``OpenAIResponsesModel`` directly works too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from chorus.testing.config import ACME_KEY
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

agents = pytest.importorskip("agents", reason="the OpenAI Agents SDK (openai-agents) is not installed")

CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


@pytest.fixture
async def sdk(chorus_server: LiveServer, up: ScriptedUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    agents.set_tracing_disabled(True)  # no trace upload to OpenAI
    async with openai.AsyncOpenAI(base_url=chorus_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        yield client


@agents.function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    return f"sunny in {city}"


async def test_an_agent_on_a_bot_with_a_function_tool_streamed(sdk: openai.AsyncOpenAI, up: ScriptedUpstream) -> None:
    agent = agents.Agent(name="Support", instructions="Use tools when useful.", model="bot/id=support", tools=[get_weather])
    config = agents.RunConfig(model_provider=agents.MultiProvider(openai_client=sdk, unknown_prefix_mode="model_id"))
    up.push(Reply(None, tool_calls=[CALL]), Reply("It is sunny in Oslo.", chunks=4))
    result = agents.Runner.run_streamed(agent, "What is the weather in Oslo?", run_config=config)
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert result.final_output == "It is sunny in Oslo." == "".join(deltas)
    first, second = (r.json for r in up.requests[-2:])
    assert first["model"] == "gpt-test" and first["tools"][0]["function"]["name"] == "get_weather"
    assert first["messages"][0] == {"role": "system",
                                    "content": "You are Ada, Acme's support agent.\n\nUse tools when useful."}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_w1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny in Oslo"}


async def test_the_default_provider_refuses_the_selector_and_the_model_class_takes_it(
        sdk: openai.AsyncOpenAI, up: ScriptedUpstream) -> None:
    with pytest.raises(agents.exceptions.UserError, match="Unknown prefix"):
        agents.MultiProvider(openai_client=sdk).get_model("bot/id=support")
    model = agents.OpenAIResponsesModel(model="bot/id=support", openai_client=sdk)
    up.push(Reply("Hello from Ada."))
    result = await agents.Runner.run(agents.Agent(name="Support", model=model), "Hi")
    assert result.final_output == "Hello from Ada."
