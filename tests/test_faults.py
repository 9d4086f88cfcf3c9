"""Fault injection: bad input and a misbehaving upstream end in a clean error, logged once.

Each test here reproduces a defect of the hardening issue (#11) and was run against the code before
its fix, where it failed. Cancellation and the pool are in ``test_faults_cancel.py``, uploads in
``test_faults_upload.py``, multi-worker logging in ``test_faults_workers.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chorus.testing.config import ACME_KEY, UPSTREAM_SECRET, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Drop, Error, RawBody, RawStream, Reply, ScriptedUpstream

KB = Path(__file__).parent / "data" / "kb"
AUTH = {"authorization": f"Bearer {ACME_KEY}"}
HI = [{"role": "user", "content": "hi"}]

EXTRA = """
[[providers]]
id = "capped"
driver = "openai"
base_url = "{upstream}"
models = ["capped-model"]
max_response_bytes = 100000
max_event_bytes = 10000

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
skillsets = ["maths"]

[[datasets]]
id = "handbook"
workspace = "acme"
name = "Acme handbook"
sources = ["{kb}/*.md"]

[[bots]]
id = "helpdesk"
workspace = "acme"
model = "up/gpt-test"
datasets = ["handbook"]
"""


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, EXTRA.format(upstream=upstream.base_url, kb=KB),
                         data_dir=str(tmp_path_factory.mktemp("faults")))
    with LiveServer(make_app(config)) as live:
        yield live


@pytest.fixture
def url(server: LiveServer, up: ScriptedUpstream) -> str:
    return server.url


def chat(url: str, body: dict[str, Any] | None = None, **fields: Any) -> httpx.Response:
    payload = {"model": "model/name=up/gpt-test", "messages": HI, **(body or {}), **fields}
    return httpx.post(url + "/v1/chat/completions", json=payload, headers=AUTH, timeout=30)


def envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope of ``response``, checked: status, shape, no trace, no secret."""
    assert response.status_code == status, response.text[:1000]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and UPSTREAM_SECRET not in response.text
    if code is not None:
        assert error["code"] == code, error
    return error  # type: ignore[no-any-return]


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def logged_once(caplog: pytest.LogCaptureFixture, request_id: str) -> logging.LogRecord:
    """The one log record that mentions ``request_id`` (at WARNING or above, without a traceback)."""
    found = [r for r in caplog.records if request_id in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(found) == 1, [r.getMessage() for r in found]
    assert found[0].exc_info is None, "logged with a traceback"
    assert found[0].levelno < logging.ERROR or "Traceback" not in found[0].getMessage()
    return found[0]


# -- 3. JSON nested ~1,000 levels deep --------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
DEEP_BODIES = [
    ("/v1/chat/completions", '{"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "x"}], "extra": @}'),
    ("/v1/chat/completions", '{"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "x"}], '
                             '"tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": @}}}]}'),
    ("/v1/chat/completions", '{"model": "bot/id=agent", "stream": true, "messages": [{"role": "user", "content": "x"}], "x": @}'),
    ("/v1/embeddings", '{"model": "model/name=up/gpt-test", "input": @}'),
    ("/v1/vector_stores/handbook/search", '{"query": "delivery", "filters": {"a": @}}'),
    ("/v1/vector_stores", '{"name": "x", "unknown": @}'),
    ("/v1/responses", '{"model": "model/name=up/gpt-test", "input": [{"role": "user", "content": "x", "extra": @}]}'),
    ("/v1/responses", '{"model": "model/name=up/gpt-test", "input": "x", "unknown": @}'),
    ("/v1/conversations", '{"items": [{"role": "user", "content": @}]}'),
]


@pytest.mark.parametrize(("path", "template"), DEEP_BODIES)
def test_deeply_nested_json_is_400(url: str, up: ScriptedUpstream, path: str, template: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    response = httpx.post(url + path, content=template.replace("@", DEEP), headers={**AUTH, "content-type": "application/json"}, timeout=30)
    error = envelope(response, 400, "invalid_json")
    assert "nested" in error["message"]
    assert up.requests == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [900, 950, 970, 990, 1000, 1010])
def test_json_nested_near_the_limit_is_answered_or_400(url: str, up: ScriptedUpstream, depth: int) -> None:
    """Nesting that decodes must also encode for the upstream (no 500 between the two limits)."""
    nested = "[" * depth + "]" * depth
    body = ('{"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "x"}], '
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": @}}}]}').replace("@", nested)
    response = httpx.post(url + "/v1/chat/completions", content=body, headers=AUTH, timeout=30)
    assert response.status_code in (200, 400), response.text


# -- 4. malformed client tools ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"function": None}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": "get_weather"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": ["calc"]}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": {}}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "ok"}}, {"type": "function", "function": {"name": 3}}]},
         "tools[1].function.name"),
        ({"functions": [{"name": ["calc"]}]}, "functions[0].name"),
        ({"functions": [{"name": "f"}], "function_call": {"arguments": "{}"}}, "function_call.name"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["bot/id=agent", "model/name=up/gpt-test"])
def test_malformed_tools_are_400_naming_the_param(url: str, up: ScriptedUpstream, fields: dict[str, Any], param: str,
                                                  stream: bool, model: str) -> None:
    error = envelope(chat(url, fields, model=model, stream=stream), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[-1] in error["message"]
    assert up.requests == []


# -- 5. an upstream answer of the wrong shape -------------------------------------------------

WRONG_ANSWERS = [
    pytest.param(b'{"choices": "nope", "usage": "x"}', id="choices-a-string"),
    pytest.param(b'{"choices": [{"message": {"role": "assistant", "content": "x"}}], "usage": "x"}', id="usage-a-string"),
    pytest.param(b'{"choices": ["x"]}', id="choice-a-string"),
    pytest.param(b'{"choices": [{"message": "hi", "finish_reason": "stop"}]}', id="message-a-string"),
    pytest.param(b'{"choices": [{"message": {"role": "assistant", "content": 7}}]}', id="content-a-number"),
    pytest.param(b'{"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [{"function": null}]}}]}',
                 id="tool-call-without-function"),
    pytest.param(b'{"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": "calc"}}]}',
                 id="tool-calls-a-string"),
    pytest.param(b'{"choices": [{"message": {"role": "assistant", "content": null, '
                 b'"tool_calls": [{"id": "c", "function": {"name": ["calc"], "arguments": "{}"}}]}}]}',
                 id="tool-name-a-list"),
    pytest.param(b"[1, 2, 3]", id="an-array"),
    pytest.param(b"<html>Bad gateway</html>", id="not-json"),
    pytest.param(b'{"choices": ' + DEEP.encode() + b"}", id="nested-too-deep"),
]


@pytest.mark.parametrize("answer", WRONG_ANSWERS)
@pytest.mark.parametrize("model", ["model/name=up/gpt-test", "bot/id=agent"])
def test_wrong_shaped_answer_is_502_upstream_invalid_response(url: str, up: ScriptedUpstream, answer: bytes, model: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    up.push(RawBody(answer))
    response = chat(url, model=model)
    envelope(response, 502, "upstream_invalid_response")
    logged_once(caplog, response.headers["x-request-id"])


WRONG_CHUNKS = [
    pytest.param('{"choices": "zzz"}', id="choices-a-string"),
    pytest.param('{"choices": ["zzz"]}', id="choice-a-string"),
    pytest.param('{"choices": [{"delta": "zzz"}]}', id="delta-a-string"),
    pytest.param('{"choices": [{"delta": {"content": 5}}]}', id="content-a-number"),
    pytest.param('{"choices": [{"delta": {"content": "a"}}], "usage": "x"}', id="usage-a-string"),
    pytest.param('{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]}', id="tool-call-function-a-string"),
    pytest.param('{"choices": [{"delta": {"tool_calls": [{"index": "0", "function": {"name": "calc"}}]}}]}',
                 id="tool-call-index-a-string"),
    pytest.param('{"choices": [{"delta": {"tool_calls": "calc"}}]}', id="tool-calls-a-string"),
    pytest.param("this is not json", id="not-json"),
]


@pytest.mark.parametrize("chunk", WRONG_CHUNKS)
@pytest.mark.parametrize("model", ["model/name=up/gpt-test", "bot/id=agent"])
def test_wrong_shaped_first_chunk_is_502(url: str, up: ScriptedUpstream, chunk: str, model: str,
                                         caplog: pytest.LogCaptureFixture) -> None:
    up.push(RawStream([chunk, "[DONE]"]))
    response = chat(url, model=model, stream=True)
    envelope(response, 502, "upstream_invalid_response")
    logged_once(caplog, response.headers["x-request-id"])


@pytest.mark.parametrize("chunk", WRONG_CHUNKS)
@pytest.mark.parametrize("model", ["model/name=up/gpt-test", "bot/id=agent"])
def test_wrong_shaped_chunk_mid_stream_is_an_error_event(url: str, up: ScriptedUpstream, chunk: str, model: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    good = json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]})
    up.push(RawStream([good, chunk, "[DONE]"]))
    response = chat(url, model=model, stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hel"
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_invalid_response"
    logged_once(caplog, response.headers["x-request-id"])


@pytest.mark.parametrize("answer", [
    pytest.param(b'{"data": "x"}', id="data-a-string"),
    pytest.param(b'{"data": ["x"]}', id="item-a-string"),
    pytest.param(b'{"data": [{"embedding": "AAAA"}]}', id="embedding-a-string"),
    pytest.param(b'{"data": [{"embedding": [1, "x"]}]}', id="embedding-not-numbers"),
    pytest.param(b'{"data": [{"embedding": [0.5]}], "usage": "x"}', id="usage-a-string"),
    pytest.param(b"not json", id="not-json"),
])
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_of_the_wrong_shape_are_502(url: str, up: ScriptedUpstream, answer: bytes, encoding: str) -> None:
    up.push_embeddings(RawBody(answer))
    response = httpx.post(url + "/v1/embeddings", headers=AUTH,
                          json={"model": "model/name=up/gpt-test", "input": "x", "encoding_format": encoding})
    envelope(response, 502, "upstream_invalid_response")


# -- 6. upstream bodies have a size cap -------------------------------------------------------

def test_oversized_answer_is_502(url: str, up: ScriptedUpstream, caplog: pytest.LogCaptureFixture) -> None:
    up.push(Reply(content="x" * 300_000))
    response = chat(url, model="model/name=capped/capped-model")
    envelope(response, 502, "upstream_response_too_large")
    logged_once(caplog, response.headers["x-request-id"])


def test_oversized_chunked_answer_is_502(url: str, up: ScriptedUpstream) -> None:
    """No content-length announced: the cap is enforced while reading."""
    up.push(RawBody(b'{"choices": [{"message": {"role": "assistant", "content": "' + b"x" * 2_000_000 + b'"}}]}', chunked=True))
    envelope(chat(url, model="model/name=capped/capped-model"), 502, "upstream_response_too_large")


def test_oversized_error_body_is_502(url: str, up: ScriptedUpstream) -> None:
    up.push(RawBody(b'{"error": {"message": "' + b"x" * 2_000_000 + b'"}}', status=400, chunked=True))
    envelope(chat(url, model="model/name=capped/capped-model"), 502, "upstream_response_too_large")


def test_oversized_first_event_is_502(url: str, up: ScriptedUpstream) -> None:
    up.push(RawStream(['{"choices": [{"delta": {"content": "' + "x" * 50_000 + '"}}]}', "[DONE]"]))
    envelope(chat(url, model="model/name=capped/capped-model", stream=True), 502, "upstream_response_too_large")


def test_oversized_event_without_end_is_502(url: str, up: ScriptedUpstream) -> None:
    """An event that never ends (no blank line, no newline at all) is cut at the cap too."""
    up.push(RawStream(["data: " + "x" * 200_000]))
    envelope(chat(url, model="model/name=capped/capped-model", stream=True), 502, "upstream_response_too_large")


def test_oversized_event_mid_stream_is_an_error_event(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply(content="short " + "x" * 50_000))  # one event per word: the second is too large
    response = chat(url, model="model/name=capped/capped-model", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_response_too_large"


def test_answers_within_the_caps_pass(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply(content="y" * 50_000), Reply(content="y" * 5_000, chunks=1))
    assert chat(url, model="model/name=capped/capped-model").json()["choices"][0]["message"]["content"] == "y" * 50_000
    response = chat(url, model="model/name=capped/capped-model", stream=True)
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in sse_events(response)[:-1])
    assert text == "y" * 5_000


# -- 7. config-declared datasets are read-only through the API -------------------------------

def handbook_file(url: str) -> str:
    files = httpx.get(url + "/v1/vector_stores/handbook/files", headers=AUTH).json()["data"]
    assert files
    return str(files[0]["id"])


def upload(url: str, name: str = "note.md", text: bytes = b"# Note\n\nReturns take 30 days.\n") -> str:
    response = httpx.post(url + "/v1/files", headers=AUTH, files={"file": (name, text)}, data={"purpose": "assistants"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_config_dataset_is_read_only(url: str, up: ScriptedUpstream) -> None:
    before = httpx.get(url + "/v1/vector_stores/handbook", headers=AUTH).json()
    config_file = handbook_file(url)
    mine = upload(url)
    attempts = [
        httpx.delete(url + "/v1/vector_stores/handbook", headers=AUTH),
        httpx.post(url + "/v1/vector_stores/handbook", headers=AUTH, json={"name": "renamed"}),
        httpx.post(url + "/v1/vector_stores/handbook", headers=AUTH, json={"metadata": {"k": "v"}}),
        httpx.post(url + "/v1/vector_stores/handbook/files", headers=AUTH, json={"file_id": mine}),
        httpx.delete(url + f"/v1/vector_stores/handbook/files/{config_file}", headers=AUTH),
        httpx.delete(url + f"/v1/files/{config_file}", headers=AUTH),
    ]
    for response in attempts:
        error = envelope(response, 403, "dataset_read_only")
        assert "configuration" in error["message"]
    assert httpx.get(url + "/v1/vector_stores/handbook", headers=AUTH).json() == before
    assert handbook_file(url) == config_file
    hits = httpx.post(url + "/v1/vector_stores/handbook/search", headers=AUTH, json={"query": "delivery Europe"}).json()
    assert hits["data"]
    up.push(Reply("7 days"))
    assert chat(url, model="bot/id=helpdesk", messages=[{"role": "user", "content": "How long does delivery to Europe take?"}]).status_code == 200
    assert "Europe" in str(up.requests[-1].json["messages"][0]["content"])


def test_api_created_dataset_stays_writable(url: str) -> None:
    created = httpx.post(url + "/v1/vector_stores", headers=AUTH, json={"name": "mine"}).json()
    store = created["id"]
    file_id = upload(url)
    assert httpx.post(url + f"/v1/vector_stores/{store}", headers=AUTH, json={"name": "renamed"}).json()["name"] == "renamed"
    assert httpx.post(url + f"/v1/vector_stores/{store}/files", headers=AUTH, json={"file_id": file_id}).status_code == 200
    assert httpx.delete(url + f"/v1/vector_stores/{store}/files/{file_id}", headers=AUTH).status_code == 200
    assert httpx.delete(url + f"/v1/files/{file_id}", headers=AUTH).status_code == 200
    assert httpx.delete(url + f"/v1/vector_stores/{store}", headers=AUTH).json()["deleted"] is True


# -- minor: the upstream drops mid-body, content types, a client leaving while sending --------

def test_upstream_dropping_mid_body_is_connection_lost(url: str, up: ScriptedUpstream) -> None:
    up.push(Drop(mid_body=True))
    envelope(chat(url), 502, "upstream_connection_lost")


def test_upstream_closing_before_answering_is_connection_lost(url: str, up: ScriptedUpstream) -> None:
    up.push(Drop())
    envelope(chat(url), 502, "upstream_connection_lost")


def test_upstream_dropping_mid_stream_is_connection_lost(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply(content="one two three four five", drop_after=3))
    response = chat(url, stream=True)
    assert json.loads(sse_events(response)[-1])["error"]["code"] == "upstream_connection_lost"


def test_unreachable_upstream_stays_unreachable(url: str) -> None:
    envelope(chat(url, model="model/name=dead/dead-model"), 502, "upstream_unreachable")


JSON_ENDPOINTS = [
    ("/v1/chat/completions", {"model": "model/name=up/gpt-test", "messages": HI}),
    ("/v1/embeddings", {"model": "model/name=up/gpt-test", "input": "x"}),
    ("/v1/vector_stores", {"name": "typed"}),
    ("/v1/vector_stores/handbook/search", {"query": "delivery"}),
]


@pytest.mark.parametrize(("path", "body"), JSON_ENDPOINTS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_a_json_endpoint_refuses_other_content_types(url: str, up: ScriptedUpstream, path: str, body: dict[str, Any],
                                                     content_type: str) -> None:
    response = httpx.post(url + path, content=json.dumps(body), headers={**AUTH, "content-type": content_type})
    error = envelope(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert up.requests == []


@pytest.mark.parametrize(("path", "body"), JSON_ENDPOINTS)
@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_a_json_endpoint_takes_json_or_no_content_type(url: str, path: str, body: dict[str, Any],
                                                       content_type: str | None) -> None:
    headers = dict(AUTH) if content_type is None else {**AUTH, "content-type": content_type}
    response = httpx.post(url + path, content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text


def send_part_of_a_body(server: LiveServer, path: str, head: str) -> None:
    """Announce 100,000 bytes, send 10, and leave."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ACME_KEY}\r\n{head}"
                     f"content-length: 100000\r\n\r\n".encode() + b'{"model": ')


@pytest.mark.parametrize(("path", "head"), [
    ("/v1/chat/completions", "content-type: application/json\r\n"),
    ("/v1/embeddings", "content-type: application/json\r\n"),
    ("/v1/vector_stores", "content-type: application/json\r\n"),
    ("/v1/files", "content-type: multipart/form-data; boundary=b\r\n"),
])
def test_a_client_leaving_while_sending_its_body_is_no_error(server: LiveServer, up: ScriptedUpstream, path: str, head: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chorus")
    send_part_of_a_body(server, path, head)
    deadline = time.monotonic() + 20  # hang guard: the server notices within a moment
    while not [r for r in caplog.records if "disconnected" in r.getMessage()] and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert gone and all(r.levelno == logging.INFO for r in gone)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert up.requests == []


def test_upstream_errors_are_logged_once_without_traceback(url: str, up: ScriptedUpstream,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    up.push(Error(500, "boom", type="server_error"))
    response = chat(url)
    envelope(response, 502)
    logged_once(caplog, response.headers["x-request-id"])
