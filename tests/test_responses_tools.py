"""Hosted tools on the Responses API (file_search, web_search), stream failures and clients that leave."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY, GLOBEX_KEY, make_config
from chorus.testing.gateway import make_app, serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Hang, Reply, ScriptedUpstream
from tests.openapi_spec import spec_available, validate
from tests.test_e2e_search import RESULTS, SearchServer
from tests.test_e2e_skillsets import SKILLSETS, ProbeTool
from tests.test_responses import check_stream, sse_events

KB = Path(__file__).parent / "data" / "kb"
SEARCH_CALL = {"id": "call_s1", "type": "function", "function": {"name": "web_search", "arguments": '{"query": "rust 2.0"}'}}
MANUAL = b"""# Lighthouse manual

## Lamp

The lighthouse lamp must be cleaned every 14 days with a dry cloth.

## Fog horn

The fog horn sounds twice a minute in fog.
"""


@pytest.fixture(scope="module")
def search_server() -> Iterator[tuple[SearchServer, LiveServer]]:
    app = SearchServer()
    with LiveServer(app) as live:
        yield app, live


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    extra = f"""
[[search_engines]]
id = "web"
driver = "searxng"
base_url = "{search_server[1].url}"
"""
    config = make_config(upstream.base_url, extra, data_dir=str(tmp_path_factory.mktemp("hosted")))
    with LiveServer(make_app(config)) as live:
        yield live


@pytest.fixture
def sdk(server: LiveServer, up: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
def raw(server: LiveServer, up: ScriptedUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def manual_store(server: LiveServer, upstream: ScriptedUpstream) -> tuple[str, str]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        file = client.files.create(file=("manual.md", io.BytesIO(MANUAL)), purpose="assistants")
        others = [client.files.create(file=(path.name, path.read_bytes()), purpose="assistants").id
                  for path in (KB / "shipping.md", KB / "returns.txt")]  # a corpus where lamp terms are rare
        store = client.vector_stores.create(name="manual", file_ids=[file.id, *others])
        assert client.vector_stores.retrieve(store.id).file_counts.completed == 3
        return store.id, file.id


def test_file_search_over_an_uploaded_file(sdk: openai.OpenAI, raw: httpx.Client, up: ScriptedUpstream,
                                           manual_store: tuple[str, str]) -> None:
    store_id, file_id = manual_store
    up.push(Reply("Clean the lamp every 14 days [1]."))
    response = sdk.responses.create(model="model/name=up/gpt-test", input="How often is the lighthouse lamp cleaned?",
                                    tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    system = up.requests[-1].json["messages"][0]
    assert system["role"] == "system" and "cleaned every 14 days" in system["content"]
    part = response.output[0].content[0]  # type: ignore[union-attr]
    (citation,) = part.annotations
    assert citation.type == "file_citation" and citation.file_id == file_id and citation.filename == "manual.md"
    assert part.text[citation.index:citation.index + 3] == "[1]"
    assert response.tools[0].type == "file_search"
    if spec_available():
        validate(raw.get(f"/v1/responses/{response.id}").json(), "Response")

    up.push(Reply("Every 14 days [1].", chunks=4))
    with raw.stream("POST", "/v1/responses", json={
            "model": "bot/id=support", "input": "How often is the lamp cleaned?", "stream": True,
            "tools": [{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}]}) as streamed:
        streamed.read()
    events = sse_events(streamed)
    final = check_stream(events)
    added = [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [a["type"] for a in added] == ["file_citation"] and added[0]["file_id"] == file_id
    assert final["output"][0]["content"][0]["annotations"] == added
    assert up.requests[-1].json["messages"][0]["content"].startswith("You are Ada, Acme's support agent.")


def test_file_search_of_another_tenants_store_is_not_found(server: LiveServer, up: ScriptedUpstream,
                                                            manual_store: tuple[str, str]) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=GLOBEX_KEY, max_retries=0) as rival:
        with pytest.raises(openai.NotFoundError) as missing:
            rival.responses.create(model="bot/id=rival", input="lamp?",
                                   tools=[{"type": "file_search", "vector_store_ids": [manual_store[0]]}])
    assert missing.value.body["code"] == "vector_store_not_found"  # type: ignore[index]
    assert not up.requests


def test_web_search_uses_the_configured_engine(sdk: openai.OpenAI, up: ScriptedUpstream,
                                              search_server: tuple[SearchServer, LiveServer]) -> None:
    app, _ = search_server
    up.push(Reply(None, tool_calls=[SEARCH_CALL]), Reply("Rust 2.0 ships a new borrow checker [1]."))
    response = sdk.responses.create(model="model/name=up/gpt-test", input="What is new in Rust 2.0?",
                                    tools=[{"type": "web_search_preview"}])
    assert app.queries[-1]["q"] == ["rust 2.0"]
    assert [i.type for i in response.output] == ["message"]  # the search step stays hidden
    (citation,) = response.output[0].content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "url_citation" and citation.url == RESULTS[0]["url"]
    assert citation.title == RESULTS[0]["title"]
    tool_result = up.requests[-1].json["messages"][-1]
    assert tool_result["role"] == "tool" and "Rust 2.0 released" in tool_result["content"]
    assert response.usage is not None and response.usage.total_tokens == 30  # both model calls


def test_a_stream_that_fails_midway_ends_with_response_failed(raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply("Half an answer that never ends", drop_after=3))
    with raw.stream("POST", "/v1/responses", json={"model": "model/name=up/gpt-test", "input": "x", "stream": True}) as streamed:
        assert streamed.status_code == 200
        streamed.read()
    events = sse_events(streamed)
    final = check_stream(events)
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert "upstream" in final["error"]["message"].lower() or final["error"]["message"]


def test_leaving_before_the_first_event_cancels_the_upstream(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Hang(30))
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(30, read=0.5)) as client:
        client.post(server.url + "/v1/responses", headers={"authorization": f"Bearer {ACME_KEY}"},
                    json={"model": "model/name=up/gpt-test", "input": "x", "stream": True})
    assert up.wait_for_disconnect(10)


def test_progress_events_during_hidden_steps(raw: httpx.Client, up: ScriptedUpstream) -> None:
    up.push(Reply(None, tool_calls=[SEARCH_CALL]), Reply("Done [1]."))
    with raw.stream("POST", "/v1/responses", json={"model": "model/name=up/gpt-test", "input": "Rust news?", "stream": True,
                                                   "tools": [{"type": "web_search"}], "chorus_progress": True}) as streamed:
        streamed.read()
    events = sse_events(streamed)
    progress = [e["progress"]["type"] for e in events if e["type"] == "chorus.progress"]
    assert progress == ["tool.started", "tool.finished"]
    assert json.dumps(check_stream(events)["output"]).count("url_citation") == 1


@pytest.fixture(scope="module")
def probe_server(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with serve_with_plugins(upstream.base_url, extra=SKILLSETS, server_extra="keepalive_seconds = 0.1",
                            tools={"probe": ProbeTool}) as server:
        yield server


def test_keep_alives_flow_while_hidden_steps_run(probe_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply(None, tool_calls=[{"id": "z1", "type": "function",
                                     "function": {"name": "sleep", "arguments": '{"seconds": 0.35}'}}]),
            Reply("Rested well."))
    with httpx.Client(base_url=probe_server.url, headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30) as client, \
            client.stream("POST", "/v1/responses", json={"model": "bot/id=agent", "input": "go", "stream": True}) as streamed:
        streamed.read()
    assert ": keep-alive" in streamed.text.split("\n")
    final = check_stream(sse_events(streamed))
    assert [i["type"] for i in final["output"]] == ["message"]
    assert final["output"][0]["content"][0]["text"] == "Rested well." and final["usage"]["total_tokens"] == 30
