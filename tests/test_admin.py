"""The admin API end to end: managed keys issued, used, changed and revoked; tenancy; usage and cost.

Real HTTP on loopback: httpx for ``/admin/v1``, the official OpenAI SDK with the issued keys, the
scripted upstream behind (its replies carry the ``usage`` the gateway is charged for).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chorus.runtime.keys import digest
from chorus.testing.config import ACME_KEY, GLOBEX_KEY
from chorus.testing.gateway import serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

ADMIN_KEY = "sk-chorus-admin-test-key"
USER = [{"role": "user", "content": "hi"}]

# USD per million tokens: a call with the default usage (10 in, 5 out) costs 0.01 + 0.01 = 0.02
PRICED = """
[[providers]]
id = "priced"
driver = "openai"
base_url = "{upstream}"
api_key = "${{CHORUS_TEST_UPSTREAM_KEY}}"
models = ["gpt-priced", "gpt-cheap"]
prices = {{ "gpt-priced" = {{ input = 1000.0, output = 2000.0, cached_input = 500.0 }}, "gpt-cheap" = {{ input = 1.0, output = 2.0 }} }}

[[bots]]
id = "helper"
workspace = "acme"
model = "priced/gpt-cheap"
description = "Helps"

[[bots]]
id = "lead"
workspace = "acme"
model = "priced/gpt-priced"
team = ["helper"]
"""


def server_extra(window: float = 60) -> str:
    return f'admin_keys = ["{digest(ADMIN_KEY)}"]\nlimit_window_seconds = {window}'


def start(upstream: ScriptedUpstream, data_dir: Path, extra: str = "", window: float = 60) -> LiveServer:
    server = serve_with_plugins(upstream.base_url, extra=PRICED.format(upstream=upstream.base_url) + extra,
                                server_extra=server_extra(window), data_dir=str(data_dir))
    return server.start()


@pytest.fixture(scope="module")
def ops(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start(upstream, tmp_path_factory.mktemp("ops"))
    yield server
    server.stop()


@pytest.fixture
def admin(ops: LiveServer, up: ScriptedUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ops.url + "/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                      timeout=20) as client:
        yield client


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=20)


def create_key(admin: httpx.Client, workspace: str = "acme", **body: Any) -> dict[str, Any]:
    response = admin.post(f"/workspaces/{workspace}/keys", json={"name": "test", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error


def test_a_created_key_works_at_once_and_is_never_shown_again(ops: LiveServer, admin: httpx.Client,
                                                              up: ScriptedUpstream) -> None:
    created = create_key(admin, name="ci")
    secret = created["key"]
    assert secret.startswith("sk-chorus-") and created["prefix"] == secret[:14] and created["id"].startswith("key_")
    up.push(Reply(content="hello"))
    with sdk(ops, secret) as client:
        answer = client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
    assert answer.choices[0].message.content == "hello"

    listed = admin.get("/workspaces/acme/keys").json()["data"]
    mine = [k for k in listed if k["id"] == created["id"]]
    assert mine and "key" not in mine[0] and "digest" not in mine[0]
    assert secret not in json.dumps(listed)
    one = admin.get(f"/workspaces/acme/keys/{created['id']}").json()
    assert one["name"] == "ci" and "key" not in one and secret not in json.dumps(one)

    renamed = admin.patch(f"/workspaces/acme/keys/{created['id']}", json={"name": "renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"

    revoked = admin.delete(f"/workspaces/acme/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with sdk(ops, secret) as client, pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
    assert "revoked" in str(refused.value) and secret not in str(refused.value)


def test_an_expired_key_is_refused_with_a_clear_message(ops: LiveServer, admin: httpx.Client) -> None:
    created = create_key(admin, expires_at=int(time.time()) - 5)
    with sdk(ops, created["key"]) as client, pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert "expired" in str(refused.value)
    later = create_key(admin, expires_at="2999-01-01T00:00:00Z")
    assert later["expires_at"] > time.time()
    with sdk(ops, later["key"]) as client:
        assert client.models.list().data


def test_allowed_models_restrict_the_selectors_a_key_may_use(ops: LiveServer, admin: httpx.Client,
                                                             up: ScriptedUpstream) -> None:
    created = create_key(admin, allowed_models=["bot/id=support", "model/name=up/*"])
    with sdk(ops, created["key"]) as client:
        up.push(Reply(content="a"), Reply(content="b"))
        assert client.chat.completions.create(model="bot/id=support", messages=USER).choices[0].message.content == "a"
        assert client.chat.completions.create(model="model/name=up/gpt-test", messages=USER).choices
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="model/name=wild/other", messages=USER)
        listed = {m.id for m in client.models.list().data}
    assert "bot/id=support" in listed and "model/name=up/gpt-test" in listed
    assert all(m == "bot/id=support" or m.startswith("model/name=up/") for m in listed)
    assert refused.value.status_code == 403
    body: Any = refused.value.body
    assert body["code"] == "model_not_allowed" and body["param"] == "model"
    assert "model/name=wild/other" in body["message"]


def test_workspace_keys_and_strangers_are_refused_on_the_admin_api(ops: LiveServer, admin: httpx.Client) -> None:
    managed = create_key(admin)["key"]
    for key in (ACME_KEY, GLOBEX_KEY, managed):
        for method, path in (("GET", "/workspaces"), ("GET", "/workspaces/acme/keys"), ("POST", "/workspaces/acme/keys"),
                             ("GET", "/usage")):
            response = httpx.request(method, ops.url + "/admin/v1" + path, headers={"authorization": f"Bearer {key}"},
                                     json={} if method == "POST" else None)
            assert_error(response, 403, "permission_denied")
    assert_error(httpx.get(ops.url + "/admin/v1/workspaces"), 401, "missing_api_key")
    assert_error(httpx.get(ops.url + "/admin/v1/workspaces", headers={"authorization": "Bearer sk-nope"}), 401)
    # an admin key is not a workspace key
    with sdk(ops, ADMIN_KEY) as client, pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_an_admin_sees_every_workspace_and_keys_stay_in_theirs(ops: LiveServer, admin: httpx.Client) -> None:
    ids = {w["id"] for w in admin.get("/workspaces").json()["data"]}
    assert ids == {"acme", "globex"}
    theirs = create_key(admin, "globex")
    assert theirs["workspace"] == "globex"
    assert theirs["id"] not in {k["id"] for k in admin.get("/workspaces/acme/keys").json()["data"]}
    assert_error(admin.get(f"/workspaces/acme/keys/{theirs['id']}"), 404, "key_not_found")
    assert_error(admin.delete(f"/workspaces/acme/keys/{theirs['id']}"), 404, "key_not_found")
    assert_error(admin.get("/workspaces/initech/keys"), 404, "workspace_not_found")
    # the globex key sees globex only
    with sdk(ops, theirs["key"]) as client:
        assert {m.id for m in client.models.list().data if m.id.startswith("bot/")} == {"bot/id=rival"}


def test_admin_requests_are_validated(admin: httpx.Client) -> None:
    assert_error(admin.post("/workspaces/acme/keys", json={"name": "x", "colour": "red"}), 400)
    assert_error(admin.post("/workspaces/acme/keys", json={"rpm": 0}), 400)
    assert_error(admin.post("/workspaces/acme/keys", json={"budget": {"amount": 1, "period": "fortnight"}}), 400)
    assert_error(admin.post("/workspaces/acme/keys", json={"expires_at": "soon"}), 400)
    assert_error(admin.post("/workspaces/acme/keys", content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error(admin.get("/usage", params={"group_by": "colour"}), 400)
    assert_error(admin.get("/usage", params={"start": "yesterday"}), 400)
    assert_error(admin.get("/workspaces/acme/keys/key_missing"), 404)


def test_a_key_change_applies_at_once(ops: LiveServer, admin: httpx.Client, up: ScriptedUpstream) -> None:
    created = create_key(admin)
    with sdk(ops, created["key"]) as client:
        up.push(Reply(content="a"))
        client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
        admin.patch(f"/workspaces/acme/keys/{created['id']}", json={"allowed_models": ["bot/id=support"]})
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
        admin.patch(f"/workspaces/acme/keys/{created['id']}", json={"allowed_models": None})
        up.push(Reply(content="b"))
        assert client.chat.completions.create(model="model/name=up/gpt-test", messages=USER).choices


def usage(admin: httpx.Client, group_by: str, **params: Any) -> dict[str, dict[str, Any]]:
    response = admin.get("/usage", params={"group_by": group_by, **params})
    assert response.status_code == 200, response.text
    return {row[group_by]: row for row in response.json()["data"]}


def test_usage_and_cost_equal_what_the_upstream_reported_hidden_steps_and_members_included(
        ops: LiveServer, admin: httpx.Client, up: ScriptedUpstream) -> None:
    created = create_key(admin, name="billing")
    since = time.time() - 1
    ask = {"id": "t1", "type": "function", "function": {"name": "ask_helper", "arguments": json.dumps({"task": "sum"})}}
    lead_1 = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
              "prompt_tokens_details": {"cached_tokens": 40}}
    member = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}
    lead_2 = {"prompt_tokens": 150, "completion_tokens": 12, "total_tokens": 162}
    streamed = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    up.push(Reply(content=None, tool_calls=[ask], usage=lead_1), Reply(content="42", usage=member),
            Reply(content="The answer is 42.", usage=lead_2), Reply(content="streamed", usage=streamed))
    with sdk(ops, created["key"]) as client:
        answer = client.chat.completions.create(model="bot/id=lead", messages=USER)
        assert answer.choices[0].message.content == "The answer is 42."
        assert answer.usage is not None and answer.usage.prompt_tokens == 280
        chunks = list(client.chat.completions.create(model="model/name=priced/gpt-priced", messages=USER, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed"

    by_key = usage(admin, "key", start=since)[created["id"]]
    assert by_key["requests"] == 2
    assert by_key["input_tokens"] == 100 + 30 + 150 + 11
    assert by_key["output_tokens"] == 20 + 7 + 12 + 3
    assert by_key["cached_input_tokens"] == 40
    priced_cost = ((100 - 40) * 1000 + 40 * 500 + 20 * 2000 + 150 * 1000 + 12 * 2000 + 11 * 1000 + 3 * 2000) / 1e6
    cheap_cost = (30 * 1.0 + 7 * 2.0) / 1e6
    assert by_key["cost"] == pytest.approx(priced_cost + cheap_cost)

    by_model = usage(admin, "model", start=since)
    assert by_model["priced/gpt-cheap"]["input_tokens"] >= 30  # the team member's own model
    by_bot = usage(admin, "bot", start=since)
    assert by_bot["lead"]["requests"] >= 1
    # a range that ends before these requests has none of them
    assert created["id"] not in usage(admin, "key", start=since, end=since + 0.5)
    # one workspace's usage only
    assert set(usage(admin, "workspace", start=since, workspace="acme")) <= {"acme"}


def test_secrets_never_reach_logs_errors_or_listings(ops: LiveServer, admin: httpx.Client, up: ScriptedUpstream,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = create_key(admin, rpm=1, allowed_models=["model/name=up/*"])
    secret = created["key"]
    seen: list[str] = []
    with sdk(ops, secret) as client:
        up.push(Reply(content="a"))
        client.chat.completions.create(model="model/name=up/gpt-test", messages=USER)
        for attempt in (lambda: client.chat.completions.create(model="model/name=up/gpt-test", messages=USER),
                        lambda: client.chat.completions.create(model="bot/id=support", messages=USER)):
            try:
                attempt()
            except openai.APIStatusError as exc:
                seen.append(exc.response.text + json.dumps(dict(exc.response.headers)))
        admin.delete(f"/workspaces/acme/keys/{created['id']}")
        try:
            client.models.list()
        except openai.APIStatusError as exc:
            seen.append(exc.response.text)
    seen.append(admin.get("/workspaces/acme/keys").text)
    seen.append(admin.get("/usage", params={"group_by": "key"}).text)
    assert len(seen) == 5
    for text in [*seen, caplog.text]:
        assert secret not in text and secret[14:] not in text


def test_the_responses_api_is_limited_and_accounted_like_chat(ops: LiveServer, admin: httpx.Client,
                                                              up: ScriptedUpstream) -> None:
    created = create_key(admin, rpm=100)
    since = time.time() - 1
    up.push(Reply(content="hi there", usage={"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}),
            Reply(content="streamed", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}))
    with sdk(ops, created["key"]) as client:
        raw = client.responses.with_raw_response.create(model="model/name=priced/gpt-priced", input="hi", store=False)
        assert raw.headers["x-ratelimit-limit-requests"] == "100"
        assert raw.parse().output_text == "hi there"
        events = list(client.responses.create(model="model/name=priced/gpt-priced", input="hi", stream=True,
                                              store=False))
        assert events[-1].type == "response.completed"
    row = usage(admin, "key", start=since)[created["id"]]
    assert row["requests"] == 2 and row["input_tokens"] == 26 and row["output_tokens"] == 6
    assert row["cost"] == pytest.approx((26 * 1000 + 6 * 2000) / 1e6)


def test_a_fallback_that_answers_is_priced_and_recorded_as_itself(ops: LiveServer, admin: httpx.Client,
                                                                  up: ScriptedUpstream) -> None:
    created = create_key(admin)
    since = time.time()  # this test's records only
    up.push(Reply(content="from the fallback"))
    with sdk(ops, created["key"]) as client:
        answer = client.chat.completions.create(model="model/name=dead/dead-model,priced/gpt-priced", messages=USER)
    assert answer.choices[0].message.content == "from the fallback"
    by_model = usage(admin, "model", start=since, workspace="acme")
    assert by_model["priced/gpt-priced"]["cost"] == pytest.approx(0.02)
    assert "dead/dead-model" not in by_model
