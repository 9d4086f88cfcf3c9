"""Schemathesis against a live Chorus, driven by the official OpenAI spec (issue #11).

Every operation of the spec under ``/chat/completions``, ``/models``, ``/files``, ``/vector_stores``,
``/embeddings``, ``/responses`` and ``/conversations`` gets generated requests, valid ones (``positive``: path parameters point at real
objects, chat and embeddings at a real model, so most reach the scripted upstream, which answers
*minimally*) and invalid ones (``negative``). Nothing may answer 5xx, and every answer the spec
documents (its status and content type) must validate against it. Bounded: a fixed number of
examples per operation and mode, derandomized, no shrinking, so a run takes the same path each time.
Skips without the spec (``../shared/openai-openapi``) or without schemathesis.

Operations the spec lists that Chorus does not serve (listing, updating and deleting stored
completions, fine-tuned model deletion, file batches, vector store file updates and content) are still exercised: they must answer a clean
4xx envelope, never a 5xx.

Exclusions, each a disagreement inside the spec, not a Chorus defect (see :data:`EXCLUSIONS`):

* ``POST /files`` with ``purpose: "evals"``: ``CreateFileRequest`` allows the purpose, but the
  ``OpenAIFile`` it answers with does not list it (OpenAI answers it too). Such cases are not sent.
* ``POST /embeddings`` with ``encoding_format: "base64"``: the spec types ``embedding`` as an array
  of numbers; base64 answers (what OpenAI sends, and what the official SDK asks for by default)
  are strings. The answer is checked for 5xx, not against the schema.
* ``GET /files/{file_id}/content``: the spec documents ``application/json`` (a JSON string); the
  file's bytes are not JSON, and Chorus serves them as ``application/octet-stream``, an attachment
  (uploaded HTML or SVG is never rendered). The content type is not checked.
* Streamed chat answers and response streams: schemathesis checks each SSE event as an
  ``{"event", "data"}`` object against the chunk (or event) schema, which can never match; each
  event's data is validated here instead (``check_events``).
* ``GET /chat/completions/{id}/messages``: the spec types every listed message as an assistant
  message (``ChatCompletionResponseMessage``), though its own example lists the user's messages; the
  answer is checked for 5xx, not against the schema.
* ``DELETE /responses/{id}`` answering 404: the spec gives that 404 the bare ``Error`` object
  (``{"type", "message", ...}`` at the top level), while every other error, OpenAI's included, is the
  ``{"error": {...}}`` envelope Chorus sends. The 404 is checked for 5xx and content type only.
* Item lists and items (``GET /responses/{id}/input_items``, ``/conversations/{id}/items[/{item_id}]``):
  the item unions declare a ``type`` discriminator without a mapping, so schemathesis takes the
  schema names (``OutputMessage``, ...) as its values and refuses ``"type": "message"``. Those
  answers are validated here without the discriminator (``ITEM_SCHEMAS``).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import ScriptedUpstream
from tests.openapi_spec import SPEC_PATH, requires_spec, validate

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

pytestmark = requires_spec

PREFIXES = ("/chat/completions", "/models", "/files", "/vector_stores", "/embeddings", "/responses", "/conversations")
OPERATIONS = [
    ("POST", "/chat/completions"), ("GET", "/chat/completions"),
    ("GET", "/chat/completions/{completion_id}"), ("POST", "/chat/completions/{completion_id}"),
    ("DELETE", "/chat/completions/{completion_id}"), ("GET", "/chat/completions/{completion_id}/messages"),
    ("POST", "/embeddings"),
    ("GET", "/models"), ("GET", "/models/{model}"), ("DELETE", "/models/{model}"),
    ("GET", "/files"), ("POST", "/files"), ("GET", "/files/{file_id}"), ("DELETE", "/files/{file_id}"),
    ("GET", "/files/{file_id}/content"),
    ("GET", "/vector_stores"), ("POST", "/vector_stores"),
    ("GET", "/vector_stores/{vector_store_id}"), ("POST", "/vector_stores/{vector_store_id}"),
    ("DELETE", "/vector_stores/{vector_store_id}"),
    ("POST", "/vector_stores/{vector_store_id}/file_batches"),
    ("GET", "/vector_stores/{vector_store_id}/file_batches/{batch_id}"),
    ("POST", "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"),
    ("GET", "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"),
    ("GET", "/vector_stores/{vector_store_id}/files"), ("POST", "/vector_stores/{vector_store_id}/files"),
    ("GET", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("POST", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("DELETE", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("GET", "/vector_stores/{vector_store_id}/files/{file_id}/content"),
    ("POST", "/vector_stores/{vector_store_id}/search"),
    ("POST", "/responses"), ("GET", "/responses/{response_id}"), ("DELETE", "/responses/{response_id}"),
    ("GET", "/responses/{response_id}/input_items"),
    ("POST", "/conversations"), ("GET", "/conversations/{conversation_id}"), ("POST", "/conversations/{conversation_id}"),
    ("DELETE", "/conversations/{conversation_id}"), ("GET", "/conversations/{conversation_id}/items"),
    ("POST", "/conversations/{conversation_id}/items"), ("GET", "/conversations/{conversation_id}/items/{item_id}"),
    ("DELETE", "/conversations/{conversation_id}/items/{item_id}"),
]
EXAMPLES = 12  # per operation and mode
EXCLUSIONS = {
    "evals-purpose": "POST /files purpose 'evals': allowed by CreateFileRequest, missing from OpenAIFile.purpose",
    "base64-embeddings": "POST /embeddings base64: the spec types embedding as number[], base64 answers are strings",
    "file-content-type": "GET /files/{id}/content: documented as application/json, the bytes are served as octet-stream",
    "sse-events": "streams: schemathesis validates {event, data} wrappers against the chunk schema; chunks checked here",
    "stored-messages": "GET /chat/completions/{id}/messages: the spec types listed messages as assistant messages only",
    "delete-response-404": "DELETE /responses/{id} 404: the spec documents a bare Error object, not the error envelope",
    "item-discriminator": "item lists: the spec's item discriminator has no mapping (its values read as schema names)",
}
ITEM_SCHEMAS = {"/responses/{response_id}/input_items": "ResponseItemList",
                "/conversations/{conversation_id}/items": "ConversationItemList",
                "/conversations/{conversation_id}/items/{item_id}": "ConversationItem"}
AUTH = {"authorization": f"Bearer {ACME_KEY}"}
MODELS = {"/chat/completions": "model/name=up/gpt-test", "/embeddings": "model/name=up/gpt-test",
          "/responses": "model/name=up/gpt-test"}


@functools.cache
def schema() -> Any:
    """The spec's operations under :data:`PREFIXES`, loaded once (servers dropped: the base URL is Chorus's)."""
    import yaml

    with SPEC_PATH.open("rb") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec["paths"] = {path: item for path, item in spec["paths"].items() if path.startswith(PREFIXES)}
    spec.pop("servers", None)
    return schemathesis.openapi.from_dict(spec)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, ScriptedUpstream]]:
    with ScriptedUpstream(minimal=True) as upstream:
        config = make_config(upstream.base_url, data_dir=str(tmp_path_factory.mktemp("schemathesis")))
        with LiveServer(make_app(config)) as server:
            yield server, upstream


def check_events(text: str) -> None:
    """Each event of a stream is a spec-exact chunk (or the error event that ends a failed stream).

    schemathesis checks an SSE answer's events as ``{"event", "data"}`` objects against the schema the
    spec gives for ``text/event-stream`` (the chunk itself), which never matches; the chunks are
    checked here instead.
    """
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events, text[:500]
    for event in events:
        if event == "[DONE]":
            continue
        payload = json.loads(event)
        if "sequence_number" in payload:  # a Responses stream event
            validate(payload, "ResponseStreamEvent")
        else:
            validate(payload, "ErrorResponse" if "error" in payload else "CreateChatCompletionStreamResponse")


def upload(server: LiveServer, text: bytes = b"# Returns\n\nReturns are accepted for thirty days.\n") -> str:
    response = httpx.post(server.base_url + "/files", headers=AUTH, files={"file": ("returns.md", io.BytesIO(text))},
                          data={"purpose": "assistants"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def store(server: LiveServer, file_id: str | None = None) -> str:
    body: dict[str, Any] = {"name": "schemathesis"} | ({"file_ids": [file_id]} if file_id else {})
    response = httpx.post(server.base_url + "/vector_stores", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def stored(server: LiveServer) -> dict[str, str]:
    """A stored response, a stored chat completion, a conversation and its item."""
    response = httpx.post(server.base_url + "/responses", headers=AUTH, json={"model": "model/name=up/gpt-test", "input": "hi"})
    assert response.status_code == 200, response.text
    chat = httpx.post(server.base_url + "/chat/completions", headers=AUTH, json={
        "model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "hi"}], "store": True})
    assert chat.status_code == 200, chat.text
    conversation = httpx.post(server.base_url + "/conversations", headers=AUTH, json={
        "items": [{"type": "message", "role": "user", "content": "hi"}], "metadata": {"model": "model/name=up/gpt-test"}})
    assert conversation.status_code == 200, conversation.text
    conversation_id = conversation.json()["id"]
    items = httpx.get(f"{server.base_url}/conversations/{conversation_id}/items", headers=AUTH).json()
    return {"response_id": response.json()["id"], "completion_id": chat.json()["id"], "conversation_id": conversation_id,
            "item_id": items["data"][0]["id"]}


def real_objects(server: LiveServer, method: str, path: str) -> dict[str, str]:
    """Path parameters naming objects that exist (fresh ones for a DELETE, which uses them up)."""
    objects = stored(server) if path.startswith(("/responses", "/conversations", "/chat/completions/")) else {}
    file_id = upload(server)
    if method == "DELETE":
        return {"file_id": upload(server), "vector_store_id": store(server, file_id), "model": "model/name=up/gpt-test",
                **objects}
    return {"file_id": file_id, "vector_store_id": store(server, file_id), "model": "model/name=up/gpt-test", **objects}


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_spec_finds_no_server_error_and_no_invalid_answer(live: tuple[LiveServer, ScriptedUpstream], method: str,
                                                              path: str, mode: str) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import assume as hypothesis_assume
    from schemathesis import GenerationMode

    server, upstream = live
    operation = schema()[path][method]
    positive = mode == "positive"
    fixed = real_objects(server, method, path) if positive and "{" in path else {}
    path_parameters = {k: v for k, v in fixed.items() if "{" + k + "}" in path}
    strategy = operation.as_strategy(GenerationMode(mode), path_parameters=path_parameters or None)

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        upstream.reset()
        checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
        body = case.body if isinstance(case.body, dict) else {}
        if positive and path in MODELS and body:
            body["model"] = MODELS[path]
        if path == "/files" and method == "POST":
            hypothesis_assume(body.get("purpose") != "evals")  # EXCLUSIONS["evals-purpose"]
        if path == "/embeddings" and body.get("encoding_format") == "base64":
            checks = [not_a_server_error]  # EXCLUSIONS["base64-embeddings"]
        if path == "/chat/completions/{completion_id}/messages":
            checks = [not_a_server_error, content_type_conformance]  # EXCLUSIONS["stored-messages"]
        if path == "/files/{file_id}/content":
            checks = [not_a_server_error, response_schema_conformance]  # EXCLUSIONS["file-content-type"]
        response = case.call(base_url=server.base_url, headers=AUTH, timeout=30)
        if path in ITEM_SCHEMAS and method == "GET":
            checks = [not_a_server_error, content_type_conformance]  # EXCLUSIONS["item-discriminator"]
            if response.status_code == 200:
                validate(response.json(), ITEM_SCHEMAS[path])
        if path == "/responses/{response_id}" and method == "DELETE" and response.status_code == 404:
            checks = [not_a_server_error, content_type_conformance]  # EXCLUSIONS["delete-response-404"]
        content_type = response.headers.get("content-type") or [""]  # schemathesis keeps every value of a header
        if content_type[0].startswith("text/event-stream"):
            checks = [not_a_server_error, content_type_conformance]  # EXCLUSIONS["sse-events"]
            check_events(response.text)
        case.validate_response(response, checks=checks)

    run()
