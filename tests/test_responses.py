"""The Responses API end to end: the official SDK against a live Chorus over a scripted upstream.

Every Response object and stream event Chorus sends is validated against the official OpenAPI spec
(``Response``, ``ResponseStreamEvent``, ``ResponseItemList``) when the spec is available; the
behaviour tests run without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY, GLOBEX_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream
from tests.openapi_spec import spec_available, validate

KB = Path(__file__).parent / "data" / "kb"
CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CALC = {"id": "call_c1", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "6*7"}'}}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

EXTRA = """
[[skillsets]]
id = "maths"
workspace = "acme"
[[skillsets.tools]]
name = "calc"
driver = "calculator"

[[bots]]
id = "agent"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are a careful agent."
skillsets = ["maths"]

[[datasets]]
id = "handbook"
workspace = "acme"
name = "Acme handbook"
sources = ["{kb}/*.md", "{kb}/*.txt"]

[[bots]]
id = "helpdesk"
workspace = "acme"
model = "up/gpt-test"
backstory = "You are Acme's helpdesk."
datasets = ["handbook"]
retrieval = {{ top_k = 2 }}
"""


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, EXTRA.format(kb=KB), data_dir=str(tmp_path_factory.mktemp("responses")))
    with LiveServer(make_app(config)) as live:
        yield live


@pytest.fixture
def sdk(server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
def rival(server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=GLOBEX_KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
def raw(server: LiveServer, up: ScriptedUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30) as client:
        yield client


def check(instance: Any, schema: str) -> None:
    """Validate against the spec when it is available."""
    if spec_available():
        validate(instance, schema)


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of a Responses stream; each ``event:`` line matches its ``type``."""
    events = []
    for block in response.text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        assert data["type"] == name
        events.append(data)
    return events


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Spec-valid events, increasing sequence numbers, one response id; the final response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    for event in events:
        if event["type"] != "chorus.progress":
            check(event, "ResponseStreamEvent")
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    assert "usage" not in events[0]["response"]
    final = events[-1]
    assert final["type"] in ("response.completed", "response.failed")
    check(final["response"], "Response")
    return dict(final["response"])


def upstream_messages(up: ScriptedUpstream, index: int = -1) -> list[dict[str, Any]]:
    return list(up.requests[index].json["messages"])


# -- create ----------------------------------------------------------------------------------------


def test_plain_model_answer_is_a_spec_exact_response(sdk: openai.OpenAI, raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("Hello there"))
    response = sdk.responses.create(model="model/name=up/gpt-test", input="hi", temperature=0.3, max_output_tokens=50,
                                    metadata={"topic": "greeting"}, user="u-1", extra_body={"unknown_field_ignored": True})
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Hello there"
    assert response.model == "model/name=up/gpt-test"
    assert response.output[0].id.startswith("msg_")  # type: ignore[union-attr]
    assert response.usage is not None and response.usage.input_tokens == 10 and response.usage.total_tokens == 15
    sent = up.requests[-1].json
    assert sent["model"] == "gpt-test" and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["temperature"] == 0.3 and sent["max_completion_tokens"] == 50 and sent["user"] == "u-1"
    assert "metadata" not in sent and "unknown_field_ignored" not in sent
    up.push(Reply("Hi again"))
    body = raw.post("/v1/responses", json={"model": "model/name=up/gpt-test", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                          {"type": "input_image", "image_url": "https://x.test/a.png"}]}],
        "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"}, "tools": [WEATHER_TOOL], "tool_choice": "auto", "parallel_tool_calls": False})
    assert body.status_code == 200, body.text
    check(body.json(), "Response")
    sent = up.requests[-1].json
    assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "auto"}}
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
    assert sent["reasoning_effort"] == "low" and sent["parallel_tool_calls"] is False
    assert sent["tools"] == [{"type": "function", "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters")}}]
    assert body.json()["tools"][0]["strict"] is False


def test_instructions_layer_onto_the_backstory(sdk: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply("Bonjour"))
    sdk.responses.create(model="bot/id=support", input="hi", instructions="Answer in French.")
    assert upstream_messages(up)[0] == {"role": "system", "content": "You are Ada, Acme's support agent.\n\nAnswer in French."}
    assert up.requests[-1].json["temperature"] == 0.2  # the bot's params stay defaults


def test_bot_with_a_dataset_answers_with_annotations(sdk: openai.OpenAI, raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("Standard delivery to Europe takes 7 business days [1]."))
    response = sdk.responses.create(model="bot/id=helpdesk", input="How long does delivery to Europe take?")
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text" and len(part.annotations) == 1
    citation = part.annotations[0]
    assert citation.type == "url_citation" and "Europe" in citation.title
    assert part.text[citation.start_index:citation.end_index] == "[1]"
    check(raw.get(f"/v1/responses/{response.id}").json(), "Response")

    up.push(Reply("Returns are accepted within 30 days [1] and refunds take 5 days [1].", chunks=12))
    with raw.stream("POST", "/v1/responses", json={"model": "bot/id=helpdesk", "input": "What is the returns refund policy?",
                                                   "stream": True}) as streamed:
        streamed.read()
    events = sse_events(streamed)
    final = check_stream(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [e["annotation_index"] for e in added] == [0, 1]
    text = final["output"][0]["content"][0]["text"]
    annotations = final["output"][0]["content"][0]["annotations"]
    assert annotations == [e["annotation"] for e in added]
    assert all(text[a["start_index"]:a["end_index"]] == "[1]" for a in annotations)


def test_sdk_stream_of_a_bot_with_a_dataset(sdk: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply("Delivery to Europe takes 7 business days [1].", chunks=6))
    with sdk.responses.stream(model="bot/id=helpdesk", input="How long does delivery to Europe take?") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Delivery to Europe takes 7 business days [1]."
    assert final.output[0].content[0].annotations[0].type == "url_citation"  # type: ignore[union-attr]
    assert sdk.responses.retrieve(final.id).output_text == final.output_text  # stored before the final event


def test_plain_model_stream_is_spec_exact(raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("One two three", chunks=3))
    with raw.stream("POST", "/v1/responses", json={"model": "model/name=up/gpt-test", "input": "count", "stream": True}) as streamed:
        assert streamed.status_code == 200
        streamed.read()
    events = sse_events(streamed)
    final = check_stream(events)
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                     "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert final["usage"]["total_tokens"] == 15 and final["output"][0]["content"][0]["text"] == "One two three"
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {final["output"][0]["id"]}


# -- tools -----------------------------------------------------------------------------------------


def test_function_tool_round_trip_with_previous_response_id(sdk: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(None, tool_calls=[CALL]))
    first = sdk.responses.create(model="bot/id=support", input="Weather in Oslo?", tools=[WEATHER_TOOL])  # type: ignore[list-item]
    (call,) = first.output
    assert call.type == "function_call" and call.call_id == "call_w1" and call.name == "get_weather"
    assert call.id.startswith("fc_") and json.loads(call.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    up.push(Reply("It is sunny in Oslo."))
    second = sdk.responses.create(model="bot/id=support", previous_response_id=first.id, tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                  input=[{"type": "function_call_output", "call_id": "call_w1", "output": "sunny"}])
    assert second.output_text == "It is sunny in Oslo." and second.previous_response_id == first.id
    messages = upstream_messages(up)
    assert messages[1:] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"},
    ]
    up.push(Reply("Anything else?"))
    sdk.responses.create(model="bot/id=support", previous_response_id=second.id, input="thanks")
    assert [m["role"] for m in upstream_messages(up)] == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_streamed_function_call_events(raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("Let me check.", tool_calls=[CALL]))
    with raw.stream("POST", "/v1/responses", json={"model": "model/name=up/gpt-test", "input": "Weather?", "stream": True,
                                                   "tools": [WEATHER_TOOL]}) as streamed:
        streamed.read()
    events = sse_events(streamed)
    final = check_stream(events)
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    call = final["output"][1]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == call["arguments"] == CALL["function"]["arguments"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["item_id"] == call["id"] and done["name"] == "get_weather" and done["output_index"] == 1


def test_mixed_client_and_server_tool_turn(sdk: openai.OpenAI, raw: httpx.Client, up: ScriptedUpstream) -> None:
    """The server's calc call stays hidden and is restored when the client sends its result."""
    up.push(Reply(None, tool_calls=[CALC, CALL]), Reply("6*7 is 42 and it is sunny."))
    first = sdk.responses.create(model="bot/id=agent", input="Compute 6*7 and get the weather in Oslo.",
                                 tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert [(i.type, i.call_id) for i in first.output] == [("function_call", "call_w1")]  # type: ignore[union-attr]
    assert first.usage is not None and first.usage.total_tokens == 15
    with raw.stream("POST", "/v1/responses", json={
            "model": "bot/id=agent", "previous_response_id": first.id, "stream": True, "tools": [WEATHER_TOOL],
            "input": [{"type": "function_call_output", "call_id": "call_w1", "output": "sunny"}]}) as streamed:
        streamed.read()
    final = check_stream(sse_events(streamed))
    assert final["output"][0]["content"][0]["text"] == "6*7 is 42 and it is sunny."
    messages = upstream_messages(up)
    assert messages[2]["tool_calls"] == [CALC, CALL]  # the whole assistant turn, hidden call included
    assert messages[3] == {"role": "tool", "tool_call_id": "call_c1", "content": '{"result":42}'}
    assert messages[4] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}


# -- storage ---------------------------------------------------------------------------------------


def test_retrieve_delete_and_input_items(sdk: openai.OpenAI, raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("noted"))
    items = [{"role": "user", "content": f"note {i}"} for i in range(5)]
    response = sdk.responses.create(model="model/name=up/gpt-test", input=items)  # type: ignore[arg-type]
    fetched = raw.get(f"/v1/responses/{response.id}")
    assert fetched.status_code == 200
    check(fetched.json(), "Response")
    assert fetched.json()["output"][0]["id"] == response.output[0].id and fetched.json()["output"][0]["content"][0]["text"] == "noted"
    page = raw.get(f"/v1/responses/{response.id}/input_items", params={"limit": 2, "order": "asc"}).json()
    check(page, "ResponseItemList")
    assert [i["content"][0]["text"] for i in page["data"]] == ["note 0", "note 1"] and page["has_more"] is True
    listed = list(sdk.responses.input_items.list(response.id, order="asc", limit=2))  # the SDK pages through all
    assert [i.content[0].text for i in listed] == [f"note {i}" for i in range(5)]  # type: ignore[union-attr]
    assert all(i.id.startswith("msg_") for i in listed)  # type: ignore[union-attr]
    deleted = raw.delete(f"/v1/responses/{response.id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(response.id)
    with pytest.raises(openai.BadRequestError) as chained:
        sdk.responses.create(model="model/name=up/gpt-test", input="more", previous_response_id=response.id)
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_store_false_cannot_be_retrieved_or_chained(sdk: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply("ephemeral"))
    response = sdk.responses.create(model="model/name=up/gpt-test", input="hi", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as chained:
        sdk.responses.create(model="model/name=up/gpt-test", input="more", previous_response_id=response.id)
    error = chained.value.body
    assert error["code"] == "previous_response_not_found" and "store: false" in error["message"]  # type: ignore[index]


def test_another_tenants_response_is_not_found(sdk: openai.OpenAI, rival: openai.OpenAI, raw: httpx.Client,
                                               server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply("mine"))
    response = sdk.responses.create(model="model/name=up/gpt-test", input="secret")
    with pytest.raises(openai.NotFoundError):
        rival.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        rival.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        list(rival.responses.input_items.list(response.id))
    with pytest.raises(openai.BadRequestError) as chained:
        rival.responses.create(model="model/name=up/gpt-test", input="x", previous_response_id=response.id)
    assert chained.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert sdk.responses.retrieve(response.id).output_text == "mine"  # untouched


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "model/name=up/gpt-test", "input": "x", "tools": [{"type": "code_interpreter"}]}, 400, "tools[0].type"),
    ({"model": "model/name=up/gpt-test", "input": [{"type": "message", "role": "robot", "content": "x"}]}, 400, "input[0].role"),
    ({"model": "model/name=up/gpt-test", "input": [{"type": "computer_call_output"}]}, 400, "input[0].type"),
    ({"model": "model/name=up/gpt-test", "input": [{"type": "function_call_output", "output": "x"}]}, 400, "input[0].call_id"),
    ({"model": "model/name=up/gpt-test", "input": 5}, 400, "input"),
    ({"model": "model/name=up/gpt-test"}, 400, "input"),
    ({"input": "x"}, 400, "model"),
    ({"model": "gpt-4o", "input": "x"}, 404, "model"),
    ({"model": "model/name=up/gpt-test", "input": "x", "temperature": "hot"}, 400, "temperature"),
    ({"model": "model/name=up/gpt-test", "input": "x", "tools": [{"type": "function"}]}, 400, "tools[0].name"),
    ({"model": "model/name=up/gpt-test", "input": "x", "tools": [{"type": "file_search"}]}, 400, "tools[0].vector_store_ids"),
    ({"model": "model/name=up/gpt-test", "input": "x", "text": {"format": {"type": "yaml"}}}, 400, "text.format.type"),
    ({"model": "model/name=up/gpt-test", "input": "x", "conversation": "conv_nope"}, 404, "conversation"),
])
def test_bad_requests_are_openai_errors(raw: httpx.Client, body: dict[str, Any], status: int, param: str) -> None:
    answer = raw.post("/v1/responses", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    check(answer.json(), "ErrorResponse")


def test_unsupported_hosted_tool_is_named(raw: httpx.Client) -> None:
    answer = raw.post("/v1/responses", json={"model": "model/name=up/gpt-test", "input": "x",
                                             "tools": [{"type": "image_generation"}]})
    assert answer.status_code == 400 and "'image_generation'" in answer.json()["error"]["message"]
