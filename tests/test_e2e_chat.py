"""End-to-end: the official OpenAI SDK against a live Chorus backed by a scripted upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY, UPSTREAM_SECRET
from chorus.testing.upstream import Reply, ScriptedUpstream
from tests.openapi_spec import requires_spec, validate

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALLS = [
    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
]


def test_non_stream_echoes_selector_and_calls_upstream_model(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="Hello there"))
    raw = client.chat.completions.with_raw_response.create(
        model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.model == "model/name=up/gpt-test"
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 15
    sent = up.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-test"
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert "stream" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"


@pytest.mark.parametrize(
    ("selector", "upstream_model"),
    [
        ("model/name=shared-model", "shared-model"),
        ("model/name=anything-else", "anything-else"),
        ("model/name=wild/meta-llama/Llama-3", "meta-llama/Llama-3"),
        ("model/name=org/model-with-slash", "org/model-with-slash"),
    ],
)
def test_selector_grammar(client: openai.OpenAI, up: ScriptedUpstream, selector: str, upstream_model: str) -> None:
    completion = client.chat.completions.create(model=selector, messages=[{"role": "user", "content": "x"}])
    assert completion.model == selector
    assert up.requests[-1].json["model"] == upstream_model


@requires_spec
def test_non_stream_matches_openai_schema(chorus_server, up: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    up.push(Reply(content="Schema check", tool_calls=None))
    response = httpx.post(
        chorus_server.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {ACME_KEY}"},
        json={"model": "bot/id=support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    validate(response.json(), "CreateChatCompletionResponse")


def test_stream_with_usage(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="one two three four"))
    chunks = list(
        client.chat.completions.create(
            model="bot/id=support",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {"bot/id=support"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    choice_chunks = [c for c in chunks if c.choices]
    assert choice_chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    sent = up.requests[-1].json
    assert sent["stream"] is True


@requires_spec
def test_stream_chunks_match_openai_schema(chorus_server, up: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    up.push(Reply(content="a b c", tool_calls=None))
    events = _raw_stream(chorus_server.url, {"model": "model/name=gpt-test", "stream": True,
                                             "stream_options": {"include_usage": True},
                                             "messages": [{"role": "user", "content": "x"}]})
    assert events[-1] == "[DONE]"
    for data in events[:-1]:
        chunk = json.loads(data)
        assert "usage" in chunk and (chunk["usage"] is None) == bool(chunk["choices"])
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_stream_without_usage_has_no_usage_fields(chorus_server, up: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    up.push(Reply(content="a b"))
    events = _raw_stream(chorus_server.url, {"model": "model/name=gpt-test", "stream": True,
                                             "messages": [{"role": "user", "content": "x"}]})
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)
    # Chorus always asks the upstream for usage so it can account for it.
    assert up.requests[-1].json["stream_options"] == {"include_usage": True}


def _raw_stream(base: str, body: dict) -> list[str]:  # type: ignore[type-arg]
    events: list[str] = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return events


def test_client_tool_calls_non_stream(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=CALLS))
    completion = client.chat.completions.create(
        model="model/name=gpt-test",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[TOOL],
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [c.model_dump() for c in choice.message.tool_calls or []] == CALLS
    sent = up.requests[-1].json
    assert sent["tools"] == [TOOL] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True


def test_client_tool_calls_stream_and_follow_up(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=CALLS))
    stream = client.chat.completions.create(
        model="model/name=gpt-test", messages=[{"role": "user", "content": "weather?"}], tools=[TOOL], stream=True
    )
    calls: dict[int, dict] = {}  # type: ignore[type-arg]
    finish = None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta_call.index, {"id": None, "name": "", "arguments": ""})
            if delta_call.id:
                call["id"] = delta_call.id
            if delta_call.function and delta_call.function.name:
                call["name"] += delta_call.function.name
            if delta_call.function and delta_call.function.arguments:
                call["arguments"] += delta_call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["id"], c["name"], c["arguments"]) for c in calls.values()] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in CALLS
    ]
    # The client sends the results back: assistant content null + tool messages pass through.
    up.push(Reply(content="Sunny in Paris, snow in Oslo"))
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": CALLS},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "snow"},
    ]
    answer = client.chat.completions.create(model="model/name=gpt-test", messages=history, tools=[TOOL])  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Sunny in Paris, snow in Oslo"
    assert up.requests[-1].json["messages"] == history


FUNCTION = {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


def test_legacy_functions_non_stream(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[{"id": "call_x", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"a"}'}}]))
    completion = client.chat.completions.create(
        model="model/name=gpt-test",
        messages=[{"role": "user", "content": "find a"}],
        functions=[FUNCTION],
        function_call={"name": "lookup"},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "lookup"
    assert choice.message.function_call.arguments == '{"q":"a"}'
    assert not choice.message.tool_calls
    sent = up.requests[-1].json
    assert "functions" not in sent and "function_call" not in sent
    assert sent["tools"] == [{"type": "function", "function": FUNCTION}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["parallel_tool_calls"] is False


def test_legacy_functions_stream_and_history(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[{"id": "call_x", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "abc"}'}}]))
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q":"z"}'}},
        {"role": "function", "name": "lookup", "content": "result z"},
        {"role": "user", "content": "again"},
    ]
    stream = client.chat.completions.create(model="model/name=gpt-test", messages=history, functions=[FUNCTION], stream=True)  # type: ignore[arg-type]
    name, arguments, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        assert not delta.tool_calls
        if delta.function_call:
            name += delta.function_call.name or ""
            arguments += delta.function_call.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, arguments, finish) == ("lookup", '{"q": "abc"}', "function_call")
    sent = up.requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q":"z"}'}
    assert sent[2] == {"role": "tool", "content": "result z", "tool_call_id": sent[1]["tool_calls"][0]["id"]}


def test_layering_with_plain_model_passes_instructions_through(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "Use French."},
        {"role": "user", "content": "hi"},
    ]
    client.chat.completions.create(model="model/name=gpt-test", messages=messages)  # type: ignore[arg-type]
    assert up.requests[-1].json["messages"] == messages


def test_layering_with_bot_extends_backstory(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    client.chat.completions.create(
        model="bot/id=support",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "developer", "content": [{"type": "text", "text": "Mention order numbers."}]},
            {"role": "user", "content": "Where is my order?"},
        ],
    )
    sent = up.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"] == "You are Ada, Acme's support agent.\n\nAnswer in French.\n\nMention order numbers."
    client.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "hi"}])
    assert up.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are Ada, Acme's support agent."},
        {"role": "user", "content": "hi"},
    ]


def test_bot_params_are_defaults_request_overrides(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    client.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": "a"}])
    sent = up.requests[-1].json
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 400)
    client.chat.completions.create(
        model="bot/id=support", messages=[{"role": "user", "content": "a"}], temperature=0.9, max_tokens=10
    )
    sent = up.requests[-1].json
    assert (sent["temperature"], sent["max_tokens"]) == (0.9, 10)


def test_parameters_forwarded_and_unknown_ignored(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": True}
    params = {
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 60, "stop": ["\n\n"], "n": 2,
        "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2, "logit_bias": {"50256": -100},
        "logprobs": True, "top_logprobs": 2, "response_format": {"type": "json_schema", "json_schema": schema},
        "user": "user-42", "reasoning_effort": "low",
    }
    completion = client.chat.completions.create(
        model="model/name=gpt-test",
        messages=[{"role": "user", "content": "json please"}],
        extra_body={"totally_unknown": {"x": 1}, "api_base": "http://169.254.169.254"},
        metadata={"k": "v"},
        store=True,
        **params,  # type: ignore[arg-type]
    )
    assert len(completion.choices) == 2
    sent = up.requests[-1].json
    for key, value in params.items():
        assert sent[key] == value, key
    for key in ("totally_unknown", "api_base", "metadata", "store"):
        assert key not in sent
    client.chat.completions.create(
        model="model/name=gpt-test", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert up.requests[-1].json["response_format"] == {"type": "json_object"}


def test_content_parts_pass_through_untouched(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    content = [
        {"type": "text", "text": "What is in this image and audio?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]
    client.chat.completions.create(model="bot/id=support", messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
    assert up.requests[-1].json["messages"][1] == {"role": "user", "content": content}


def test_paths_without_v1(chorus_server, up: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    headers = {"authorization": f"Bearer {ACME_KEY}"}
    response = httpx.post(chorus_server.url + "/chat/completions", headers=headers,
                          json={"model": "model/name=gpt-test", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"
    listing = httpx.get(chorus_server.url + "/models", headers=headers)
    assert listing.status_code == 200 and listing.json()["object"] == "list"


def test_client_disconnect_cancels_upstream_stream(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.05))
    stream = client.chat.completions.create(
        model="model/name=gpt-test", messages=[{"role": "user", "content": "long"}], stream=True
    )
    for received, _chunk in enumerate(stream, start=1):
        if received == 3:
            break
    stream.close()
    assert up.wait_for_disconnect(timeout=30), "the upstream stream was not cancelled"


def test_client_disconnect_cancels_non_stream_upstream(chorus_server, up: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    from chorus.testing.upstream import Hang

    up.push(Hang(10))
    with openai.OpenAI(base_url=chorus_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "slow"}])
    assert up.wait_for_disconnect(timeout=30), "the upstream request was not cancelled"
