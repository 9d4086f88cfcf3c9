"""Self-checks for the test-support helpers: the scripted upstream and the OpenAPI validator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from chorus.testing.upstream import DEFAULT_USAGE, Drop, Error, Hang, RawStream, Reply, ScriptedUpstream

try:
    from tests.openapi_spec import REQUIRED_SCHEMAS, errors, requires_spec, schema_names, validate
except ModuleNotFoundError:  # tests/ itself is on sys.path (rootdir not importable)
    from openapi_spec import REQUIRED_SCHEMAS, errors, requires_spec, schema_names, validate  # type: ignore[no-redef]

CHAT: dict[str, Any] = {"model": "up-a", "messages": [{"role": "user", "content": "hi"}]}
TOOL_CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":3}'}},
    {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


def chat_url(up: ScriptedUpstream) -> str:
    return f"{up.base_url}/chat/completions"


def stream_events(up: ScriptedUpstream, body: dict[str, Any]) -> list[str]:
    """POST a streaming chat request; return the SSE ``data:`` payloads."""
    with httpx.Client(timeout=5) as client, client.stream("POST", chat_url(up), json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]


def chunks_of(events: list[str]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# ----------------------------------------------------------------------------- upstream: JSON


@requires_spec
def test_non_stream_reply_matches_spec_and_is_recorded(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("Hello world", extra={"service_tier": "default"}))
    resp = httpx.post(chat_url(upstream) + "?x=1", json=CHAT, headers={"Authorization": "Bearer sk-up"})
    assert resp.status_code == 200
    body = resp.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion" and body["model"] == "up-a"
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                "message": {"role": "assistant", "content": "Hello world", "refusal": None}}]
    assert body["usage"] == DEFAULT_USAGE and body["service_tier"] == "default"
    (rec,) = upstream.requests
    assert (rec.method, rec.path, rec.query, rec.json) == ("POST", "/v1/chat/completions", "x=1", CHAT)
    assert rec.headers["authorization"] == "Bearer sk-up"


def test_empty_queue_replies_ok_and_n_choices(upstream: ScriptedUpstream) -> None:
    body = httpx.post(chat_url(upstream), json={**CHAT, "n": 3}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"ok"}
    upstream.push(Reply(None, tool_calls=TOOL_CALLS, usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                            "total_tokens": 3}))
    body = httpx.post(chat_url(upstream), json=CHAT).json()
    assert body["choices"][0]["message"]["tool_calls"] == TOOL_CALLS
    assert body["choices"][0]["finish_reason"] == "tool_calls" and body["usage"]["total_tokens"] == 3
    assert upstream.pending == 0


@requires_spec
def test_error_envelope(upstream: ScriptedUpstream) -> None:
    upstream.push(Error(429, "slow down", type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"Retry-After": "1"}))
    resp = httpx.post(chat_url(upstream), json=CHAT)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    validate(resp.json(), "ErrorResponse")
    assert resp.json() == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                                     "code": "rate_limit_exceeded"}}
    resp = httpx.get(f"{upstream.base_url}/nope")
    assert resp.status_code == 404
    validate(resp.json(), "ErrorResponse")
    assert upstream.requests[-1].path == "/v1/nope"


@requires_spec
def test_models_and_embeddings(upstream: ScriptedUpstream) -> None:
    models = httpx.get(f"{upstream.base_url}/models").json()
    validate(models, "ListModelsResponse")
    for model in models["data"]:
        validate(model, "Model")
    assert [m["id"] for m in models["data"]] == ["up-a", "up-b"]
    req = {"model": "emb", "input": ["alpha", "beta"]}
    first = httpx.post(f"{upstream.base_url}/embeddings", json=req).json()
    validate(first, "CreateEmbeddingResponse")
    assert [len(d["embedding"]) for d in first["data"]] == [8, 8]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
    again = httpx.post(f"{upstream.base_url}/embeddings", json={"model": "emb", "input": "beta"}).json()
    assert again["data"][0]["embedding"] == first["data"][1]["embedding"]
    assert [r.path for r in upstream.requests] == ["/v1/models", "/v1/embeddings", "/v1/embeddings"]


# ----------------------------------------------------------------------------- upstream: streams


@requires_spec
def test_stream_chunks_match_spec(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("Hello there, brave new world"))
    chunks = chunks_of(stream_events(upstream, {**CHAT, "stream": True}))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert "usage" not in chunk
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert pieces == ["Hello", " there,", " brave", " new", " world"]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_stream_chunks_param_and_n(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("abcdefg", chunks=3))
    chunks = chunks_of(stream_events(upstream, {**CHAT, "stream": True, "n": 2}))
    content = {0: "", 1: ""}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        content[choice["index"]] += choice["delta"].get("content") or ""
    assert content == {0: "abcdefg", 1: "abcdefg"}
    assert len(chunks) == 2 * (1 + 3 + 1)


@requires_spec
def test_stream_tool_call_fragments_reassemble(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply(None, tool_calls=TOOL_CALLS))
    chunks = chunks_of(stream_events(upstream, {**CHAT, "stream": True}))
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        for frag in chunk["choices"][0]["delta"].get("tool_calls", []):
            if "id" in frag:  # first fragment of a call: id, type, name, empty arguments
                assert frag["function"]["arguments"] == ""
                calls[frag["index"]] = {"id": frag["id"], "type": frag["type"],
                                        "function": {"name": frag["function"]["name"], "arguments": ""}}
            else:
                assert set(frag) == {"index", "function"} and set(frag["function"]) == {"arguments"}
                calls[frag["index"]]["function"]["arguments"] += frag["function"]["arguments"]
    assert [calls[i] for i in sorted(calls)] == TOOL_CALLS
    arg_fragments = [c for c in chunks if "id" not in (c["choices"][0]["delta"].get("tool_calls") or [{"id": 0}])[0]]
    assert len(arg_fragments) == 6  # 3 per call
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@requires_spec
def test_stream_include_usage(upstream: ScriptedUpstream) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = chunks_of(stream_events(upstream, body))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == DEFAULT_USAGE
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_raw_stream(upstream: ScriptedUpstream) -> None:
    upstream.push(RawStream(['{"weird": true}', "event: ping\ndata: {}\n\n", "[DONE]"]))
    with httpx.Client() as client, client.stream("POST", chat_url(upstream), json={**CHAT, "stream": True}) as r:
        text = r.read().decode()
    assert text == 'data: {"weird": true}\n\nevent: ping\ndata: {}\n\ndata: [DONE]\n\n'
    assert upstream.wait_streams_completed(1), "the server never counted the stream as completed"
    assert upstream.completed_streams == 1


# ----------------------------------------------------------------------------- upstream: failures


def test_drop_gives_connection_error(upstream: ScriptedUpstream) -> None:
    upstream.push(Drop())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(chat_url(upstream), json=CHAT)
    assert httpx.post(chat_url(upstream), json=CHAT).status_code == 200  # server still fine


def test_stream_drop_after(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("one two three four", drop_after=2))
    events: list[str] = []
    with httpx.Client() as client, client.stream("POST", chat_url(upstream), json={**CHAT, "stream": True}) as r:
        with pytest.raises(httpx.RemoteProtocolError):
            events.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert len(events) == 2 and "[DONE]" not in "".join(events)
    assert upstream.completed_streams == 0 and upstream.disconnects == 0


def test_disconnect_is_counted(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("lots of words " * 20, chunk_delay=0.05))
    with httpx.Client(timeout=5) as client:
        with client.stream("POST", chat_url(upstream), json={**CHAT, "stream": True}) as resp:
            first = next(line for line in resp.iter_lines() if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        # leaving the block closes the half-read response (and its connection)
        assert upstream.wait_for_disconnect(timeout=30)
        assert upstream.disconnects == 1 and upstream.completed_streams == 0
        assert not upstream.wait_for_disconnect(timeout=0.05)  # the one disconnect was claimed
        stream_events(upstream, {**CHAT, "stream": True})
    assert upstream.wait_streams_completed(1), "the server never counted the stream as completed"
    assert upstream.completed_streams == 1 and upstream.disconnects == 1


def test_wait_streams_completed(upstream: ScriptedUpstream) -> None:
    assert upstream.wait_streams_completed(0, timeout=0)
    assert not upstream.wait_streams_completed(1, timeout=0.05)  # nothing streamed yet: False, no exception
    upstream.push(Reply("one two"), RawStream([]), RawStream(["[DONE]"]))
    for _ in range(3):
        with httpx.Client(timeout=5) as client:
            client.post(chat_url(upstream), json={**CHAT, "stream": True}).raise_for_status()
    assert upstream.wait_streams_completed(3)
    assert upstream.wait_streams_completed(3, timeout=0)  # nothing is claimed: the same answer again
    assert not upstream.wait_streams_completed(4, timeout=0.05)
    with pytest.raises(ValueError, match="n must be >= 0"):
        upstream.wait_streams_completed(-1)
    upstream.reset()
    assert not upstream.wait_streams_completed(1, timeout=0)


def test_a_stream_is_counted_before_its_client_has_it_all(upstream: ScriptedUpstream) -> None:
    """The race that ``wait_streams_completed`` exists for cannot happen with uvicorn either: the
    completion is counted before the last event is sent, so it is visible once a client has read it."""
    upstream.push(*[Reply("a b c") if i % 2 else RawStream(["x", "[DONE]"]) for i in range(20)])
    for i in range(20):
        assert stream_events(upstream, {**CHAT, "stream": True})[-1] == "[DONE]"
        assert upstream.completed_streams == i + 1


async def test_hang_does_not_block_other_requests(upstream: ScriptedUpstream) -> None:
    upstream.push(Hang(30), Reply("delayed", delay=0.1))
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as client:
        hanging = asyncio.create_task(client.post("/chat/completions", json={**CHAT, "stream": True}, timeout=60))
        await asyncio.to_thread(wait_until, lambda: len(upstream.requests) == 1)
        started = time.monotonic()
        quick = await client.post("/chat/completions", json=CHAT)
        assert quick.json()["choices"][0]["message"]["content"] == "delayed"
        assert time.monotonic() - started >= 0.1  # the reply's delay was honoured
        assert not hanging.done()  # answered while the other request still hangs
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
    # the client gave up on a (streaming) request: that counts as a disconnect
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 30)


def test_stop_does_not_wait_for_a_hang() -> None:
    up = ScriptedUpstream().start()
    up.push(Hang(600))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(chat_url(up), json=CHAT, timeout=10).status_code)
        except httpx.HTTPError as exc:  # pragma: no cover - either outcome is fine
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: len(up.requests) == 1)
    stopper = threading.Thread(target=up.stop)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive()  # stop() returned long before the 600 s hang would have ended
    thread.join(60)
    assert not thread.is_alive() and outcome
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{up.port}/v1/models")


# ----------------------------------------------------------------------------- the official SDK


def test_openai_sdk_sync(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("Hi there"), Reply("streamed text", tool_calls=TOOL_CALLS[:1]), Error(429, "slow",
                                                                                             type="rate_limit_error"))
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as client:
        completion = client.chat.completions.create(model="up-a", messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "Hi there"
        assert completion.usage is not None and completion.usage.total_tokens == 15
        stream = client.chat.completions.create(model="up-b", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, stream_options={"include_usage": True})
        text, args, usage, finish = "", "", None, None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    args += call.function.arguments or "" if call.function else ""
        assert (text, args, finish) == ("streamed text", TOOL_CALLS[0]["function"]["arguments"], "tool_calls")
        assert usage is not None and usage.total_tokens == 15
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="up-a", messages=[{"role": "user", "content": "hi"}])
        assert [m.id for m in client.models.list()] == ["up-a", "up-b"]
        vector = client.embeddings.create(model="emb", input="beta").data[0].embedding  # SDK asks for base64
    plain = httpx.post(f"{upstream.base_url}/embeddings", json={"model": "emb", "input": "beta"}).json()
    assert vector == pytest.approx(plain["data"][0]["embedding"], abs=1e-6)
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-test"


async def test_openai_sdk_async(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply("one two three", chunk_delay=0.01))
    async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as client:
        stream = await client.chat.completions.create(model="up-a", messages=[{"role": "user", "content": "x"}],
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "one two three"


# ----------------------------------------------------------------------------- openapi_spec


@requires_spec
def test_spec_has_the_schemas_we_rely_on() -> None:
    assert set(REQUIRED_SCHEMAS) <= schema_names()


@requires_spec
def test_validate_rejects_malformed_objects() -> None:
    bad = {"id": "x", "object": "chat.completion", "created": "yesterday", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None},
                        "finish_reason": "done", "logprobs": None}]}
    with pytest.raises(AssertionError) as info:
        validate(bad, "CreateChatCompletionResponse")
    message = str(info.value)
    assert "2 error(s)" in message and "$.created" in message and "$.choices[0].finish_reason" in message
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "usage": {"total_tokens": "1"},
             "choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]}
    assert len(errors(chunk, "CreateChatCompletionStreamResponse")) == 2
    with pytest.raises(AssertionError, match="'error' is a required property"):
        validate({"message": "flat"}, "ErrorResponse")
    with pytest.raises(KeyError, match="close matches"):
        validate({}, "ChatCompletionResponse")
