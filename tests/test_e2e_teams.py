"""Teams end to end: a lead delegates to two members in parallel and answers as one model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from chorus.config import parse_config
from chorus.errors import ConfigError
from chorus.testing.config import ACME_KEY
from chorus.testing.gateway import serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

DATA = Path(__file__).parent / "data" / "kb"


def ask(call_id: str, member: str, task: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": f"ask_{member}", "arguments": json.dumps({"task": task})}}


@pytest.fixture(scope="module")
def second() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up2:
        yield up2


@pytest.fixture(scope="module")
def team_server(upstream: ScriptedUpstream, second: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    extra = f"""
[[providers]]
id = "up2"
driver = "openai"
base_url = "{second.base_url}"
models = ["writer-model"]

[[datasets]]
id = "handbook"
workspace = "acme"
sources = ["{DATA}/*.md", "{DATA}/*.txt"]

[[datasets]]
id = "policies"
workspace = "acme"
sources = ["{DATA}/returns.txt"]

[[bots]]
id = "researcher"
workspace = "acme"
name = "Researcher"
description = "Finds facts in the handbook"
model = "up/gpt-test"
backstory = "You research facts."
datasets = ["handbook"]
retrieval = {{ top_k = 1 }}

[[bots]]
id = "writer"
workspace = "acme"
name = "Writer"
model = "up2/writer-model"
backstory = "You write policy summaries."
datasets = ["policies"]

[[bots]]
id = "analyst"
workspace = "acme"
name = "Analyst"
model = "up/gpt-test"
backstory = "You lead a team."
team = ["researcher", "writer"]

[[bots]]
id = "manager"
workspace = "acme"
model = "up/gpt-test"
team = ["researcher"]

[[bots]]
id = "director"
workspace = "acme"
model = "up/gpt-test"
team = ["manager"]

[[bots]]
id = "tiny-budget"
workspace = "acme"
model = "up/gpt-test"
team = ["researcher"]
max_model_calls = 1
"""
    with serve_with_plugins(upstream.base_url, extra=extra, server_extra="max_team_depth = 1") as server:
        yield server


@pytest.fixture
def tc(team_server: LiveServer, up: ScriptedUpstream, second: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    second.reset()
    with openai.OpenAI(base_url=team_server.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        yield client
    second.reset()


QUESTION = [{"role": "user", "content": "How long does delivery to Europe take, and what is the refund policy?"}]


def test_lead_delegates_to_two_members_in_parallel(tc: openai.OpenAI, up: ScriptedUpstream, second: ScriptedUpstream) -> None:
    writer_arrived = lambda: bool(second.requests)  # noqa: E731
    up.push(
        Reply(content=None, tool_calls=[ask("t1", "researcher", "Europe delivery time"), ask("t2", "writer", "refund policy")]),
        # The researcher's reply waits until the writer's request has arrived: only concurrency gets here in time.
        Reply(content="Standard delivery to Europe takes 7 business days [1].", gate=writer_arrived),
        Reply(content="Europe: 7 business days [1]. Refunds: within 30 days [2]."),
    )
    second.push(Reply(content="Unused items can be returned within 30 days [1]."))
    completion = tc.chat.completions.create(model="bot/id=analyst", messages=QUESTION)  # type: ignore[arg-type]
    assert len(up.requests) == 3 and len(second.requests) == 1
    offered = [t["function"]["name"] for t in up.requests[0].json["tools"]]
    assert offered == ["ask_researcher", "ask_writer"]
    # Each member ran its own pipeline: its backstory and its own dataset.
    assert up.requests[1].json["messages"][0]["content"].startswith("You research facts.")
    assert up.requests[1].json["messages"][-1] == {"role": "user", "content": "Europe delivery time"}
    assert second.requests[0].json["messages"][0]["content"].startswith("You write policy summaries.")
    # Member answers reach the lead with citations renumbered into one numbering.
    results = {m["tool_call_id"]: m["content"] for m in up.requests[2].json["messages"] if m["role"] == "tool"}
    assert results["t1"].startswith("Standard delivery to Europe takes 7 business days [1].")
    assert results["t2"].startswith("Unused items can be returned within 30 days [2].")
    # One answer, both members' citations, usage summed over all four model calls.
    message = completion.choices[0].message
    assert message.content == "Europe: 7 business days [1]. Refunds: within 30 days [2]."
    urls = [a.url_citation.url for a in message.annotations or []]
    assert urls[0] == "https://acme.test/help/shipping"
    assert urls[1].startswith("chorus://datasets/policies/")
    assert completion.usage is not None and completion.usage.total_tokens == 4 * 15
    assert not message.tool_calls


def test_team_streaming_with_progress(team_server: LiveServer, tc: openai.OpenAI, up: ScriptedUpstream, second: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[ask("t1", "researcher", "Europe")]), Reply(content="Researched [1]."),
            Reply(content="Seven days [1]."))
    chunks = list(tc.chat.completions.create(model="bot/id=analyst", messages=QUESTION, stream=True,  # type: ignore[arg-type]
                                             stream_options={"include_usage": True}, extra_body={"chorus_progress": True}))
    progress = [c.model_dump().get("chorus") for c in chunks if not c.choices and c.model_dump().get("chorus")]
    assert [p["type"] for p in progress] == ["tool.started", "tool.finished"] and progress[0]["name"] == "ask_researcher"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Seven days [1]."
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    annotations = final.choices[0].delta.model_dump().get("annotations")
    assert annotations and annotations[0]["url_citation"]["url"] == "https://acme.test/help/shipping"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 3 * 15


def test_depth_limit(tc: openai.OpenAI, up: ScriptedUpstream) -> None:
    # max_team_depth = 1: the director may ask the manager, but the manager may not delegate further.
    up.push(
        Reply(content=None, tool_calls=[ask("d1", "manager", "find it")]),       # director
        Reply(content=None, tool_calls=[ask("m1", "researcher", "find it")]),    # manager (depth 1)
        Reply(content="Could not delegate."),                                    # manager, after the refusal
        Reply(content="done"),                                                   # director
    )
    completion = tc.chat.completions.create(model="bot/id=director", messages=QUESTION)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "done"
    assert len(up.requests) == 4  # the researcher never ran
    refusal = up.requests[2].json["messages"][-1]
    assert refusal["tool_call_id"] == "m1" and "deeper than 1" in refusal["content"]


def test_model_call_budget(tc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[ask("t1", "researcher", "x")]), Reply(content="Without help."))
    completion = tc.chat.completions.create(model="bot/id=tiny-budget", messages=QUESTION)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Without help."
    result = up.requests[-1].json["messages"][-1]
    assert result["role"] == "tool" and "budget" in result["content"]
    assert len(up.requests) == 2  # the researcher never called a model


def test_models_list_shows_team(tc: openai.OpenAI) -> None:
    analyst = tc.models.retrieve("bot/id=analyst").model_dump()
    assert analyst["capabilities"]["team"] == ["researcher", "writer"]
    assert tc.models.retrieve("bot/id=researcher").model_dump()["capabilities"]["datasets"] == ["handbook"]


def test_team_cycle_is_a_config_error() -> None:
    raw = {
        "providers": [{"id": "p", "driver": "openai", "models": ["m"]}],
        "workspaces": [{"id": "w", "api_keys": ["k"]}],
        "bots": [
            {"id": "a", "workspace": "w", "model": "p/m", "team": ["b"]},
            {"id": "b", "workspace": "w", "model": "p/m", "team": ["c"]},
            {"id": "c", "workspace": "w", "model": "p/m", "team": ["a"]},
        ],
    }
    with pytest.raises(ConfigError, match="team cycle: a -> b -> c -> a"):
        parse_config(raw, env={})
    raw["bots"] = [{"id": "a", "workspace": "w", "model": "p/m", "team": ["a"]}]
    with pytest.raises(ConfigError, match="team cycle: a -> a"):
        parse_config(raw, env={})
