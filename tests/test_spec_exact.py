"""Chorus answers spec-exactly whatever the upstream omits (issue #11).

The scripted upstream runs in its ``minimal`` mode: no ``refusal``, ``logprobs``, ``index``,
``usage``, ids or timestamps, as Ollama, vLLM and llama.cpp servers answer. Every object Chorus
returns (completions, chunks, models, files, vector stores, embeddings) still validates against the
official OpenAPI spec (skipped without it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream
from tests.openapi_spec import requires_spec, validate

pytestmark = requires_spec

KB = Path(__file__).parent / "data" / "kb"
AUTH = {"authorization": f"Bearer {ACME_KEY}"}
HI = [{"role": "user", "content": "hi"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CALC = {"id": "call_s", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "6*7"}'}}
CLIENT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

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
skillsets = ["maths"]

[[datasets]]
id = "handbook"
workspace = "acme"
name = "Acme handbook"
sources = ["{kb}/*.md", "{kb}/*.txt"]
"""


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, EXTRA.format(kb=KB), data_dir=str(tmp_path_factory.mktemp("spec")))
    with LiveServer(make_app(config)) as live:
        yield live


@pytest.fixture
def url(server: LiveServer, up: ScriptedUpstream) -> str:
    up.minimal = True  # every answer and embedding without optional fields (reset after the test)
    return server.url


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(url + path, json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


REPLIES = [
    pytest.param({"content": "Hello there"}, id="text"),
    pytest.param({"content": None, "tool_calls": [CALL]}, id="client-tool-call"),
    pytest.param({"content": "", "finish_reason": "length"}, id="empty-length"),
]
TARGETS = ["model/name=up/gpt-test", "model/name=wild/anything", "bot/id=support", "bot/id=agent"]


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("model", TARGETS)
def test_completion_is_spec_exact(url: str, up: ScriptedUpstream, reply: dict[str, Any], model: str) -> None:
    up.push(Reply(**reply))
    body = post(url, "/v1/chat/completions", {"model": model, "messages": HI, "tools": [CLIENT_TOOL]}).json()
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["refusal"] is None and body["choices"][0]["logprobs"] is None


def test_completion_after_hidden_tool_steps_is_spec_exact(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[CALC]), Reply("42"))
    body = post(url, "/v1/chat/completions", {"model": "bot/id=agent", "messages": HI}).json()
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["content"] == "42"


def test_completion_with_several_choices_is_spec_exact(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply("twice"))
    body = post(url, "/v1/chat/completions", {"model": "model/name=up/gpt-test", "messages": HI, "n": 2}).json()
    validate(body, "CreateChatCompletionResponse")
    assert [c["index"] for c in body["choices"]] == [0, 1]


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("model", TARGETS)
@pytest.mark.parametrize("usage", [False, True])
def test_stream_chunks_are_spec_exact(url: str, up: ScriptedUpstream, reply: dict[str, Any], model: str, usage: bool) -> None:
    up.push(Reply(**reply))
    body: dict[str, Any] = {"model": model, "messages": HI, "tools": [CLIENT_TOOL], "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    received = chunks(post(url, "/v1/chat/completions", body))
    for chunk in received:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("finish_reason" in c and "index" in c for chunk in received for c in chunk["choices"])


def test_stream_after_hidden_tool_steps_is_spec_exact(url: str, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[CALC]), Reply("forty two"))
    received = chunks(post(url, "/v1/chat/completions", {"model": "bot/id=agent", "messages": HI, "stream": True,
                                                          "stream_options": {"include_usage": True}}))
    for chunk in received:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_model_objects_are_spec_exact(url: str) -> None:
    listed = httpx.get(url + "/v1/models", headers=AUTH).json()
    validate(listed, "ListModelsResponse")
    for model in listed["data"]:
        validate(httpx.get(url + "/v1/models/" + model["id"], headers=AUTH).json(), "Model")


def test_embeddings_are_spec_exact(url: str) -> None:
    body = post(url, "/v1/embeddings", {"model": "model/name=up/gpt-test", "input": ["a", "b"]}).json()
    validate(body, "CreateEmbeddingResponse")
    assert [d["index"] for d in body["data"]] == [0, 1]


def test_file_objects_are_spec_exact(url: str) -> None:
    uploaded = httpx.post(url + "/v1/files", headers=AUTH, files={"file": ("n.md", b"# N\n\nText.\n")},
                          data={"purpose": "assistants"}).json()
    validate(uploaded, "OpenAIFile")
    validate(httpx.get(url + "/v1/files/" + uploaded["id"], headers=AUTH).json(), "OpenAIFile")
    validate(httpx.get(url + "/v1/files", headers=AUTH).json(), "ListFilesResponse")
    validate(httpx.get(url + "/v1/files?purpose=batch", headers=AUTH).json(), "ListFilesResponse")  # an empty page
    validate(httpx.delete(url + "/v1/files/" + uploaded["id"], headers=AUTH).json(), "DeleteFileResponse")


def test_vector_store_objects_are_spec_exact(url: str) -> None:
    for store in ("handbook", post(url, "/v1/vector_stores", {"name": "mine"}).json()["id"]):
        validate(httpx.get(url + f"/v1/vector_stores/{store}", headers=AUTH).json(), "VectorStoreObject")
        validate(httpx.get(url + f"/v1/vector_stores/{store}/files", headers=AUTH).json(), "ListVectorStoreFilesResponse")
    validate(httpx.get(url + "/v1/vector_stores", headers=AUTH).json(), "ListVectorStoresResponse")
    file_id = httpx.post(url + "/v1/files", headers=AUTH, files={"file": ("n.md", b"# Returns\n\nThirty days.\n")},
                         data={"purpose": "assistants"}).json()["id"]
    created = post(url, "/v1/vector_stores", {"name": "spec", "file_ids": [file_id]}).json()
    validate(created, "VectorStoreObject")
    store = created["id"]
    validate(post(url, f"/v1/vector_stores/{store}", {"name": "renamed", "metadata": {"k": "v"}}).json(), "VectorStoreObject")
    validate(httpx.get(url + f"/v1/vector_stores/{store}/files", headers=AUTH).json(), "ListVectorStoreFilesResponse")
    validate(httpx.get(url + f"/v1/vector_stores/{store}/files?filter=failed", headers=AUTH).json(),
             "ListVectorStoreFilesResponse")  # an empty page
    validate(httpx.get(url + f"/v1/vector_stores/{store}/files/{file_id}", headers=AUTH).json(), "VectorStoreFileObject")
    for query in ("delivery Europe", "returns thirty days", "zzzz nothing matches"):
        for target in ("handbook", store):
            page = post(url, f"/v1/vector_stores/{target}/search", {"query": query}).json()
            validate(page, "VectorStoreSearchResultsPage")
    validate(httpx.delete(url + f"/v1/vector_stores/{store}/files/{file_id}", headers=AUTH).json(),
             "DeleteVectorStoreFileResponse")
    validate(httpx.delete(url + f"/v1/vector_stores/{store}", headers=AUTH).json(), "DeleteVectorStoreResponse")


def test_errors_are_spec_exact(url: str, up: ScriptedUpstream) -> None:
    validate(httpx.get(url + "/v1/models/nope", headers=AUTH).json(), "ErrorResponse")
    validate(httpx.get(url + "/v1/files/file-nope", headers=AUTH).json(), "ErrorResponse")
    validate(httpx.post(url + "/v1/chat/completions", content=b"{", headers=AUTH).json(), "ErrorResponse")
