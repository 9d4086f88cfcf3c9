"""Every error is the OpenAI envelope with the right status, an x-request-id, and no secrets."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY, GLOBEX_KEY, UPSTREAM_SECRET
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Drop, Error, Hang, Reply, ScriptedUpstream
from tests.openapi_spec import requires_spec, validate

BODY = {"model": "model/name=gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def post(server: LiveServer, body: object = BODY, *, key: str | None = ACME_KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/chat/completions", content=content, headers=headers, timeout=20)


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text and UPSTREAM_SECRET not in response.text
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'{"model": "x"'])
def test_malformed_json_is_400(chorus_server: LiveServer, up: ScriptedUpstream, raw: bytes) -> None:
    assert_envelope(post(chorus_server, raw=raw), 400)
    assert up.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "model/name=gpt-test", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"model": "model/name=gpt-test", "messages": "hello"}, "messages"),
        ({"model": "model/name=gpt-test", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": 42, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"messages": [{"role": "user", "content": "x"}]}, None),
        ({"model": "model/name=gpt-test", "messages": []}, "messages"),
        ({"model": "model/name=gpt-test", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ],
)
def test_wrong_types_are_400_with_param(chorus_server: LiveServer, up: ScriptedUpstream, body: dict, param: str | None) -> None:  # type: ignore[type-arg]
    error = assert_envelope(post(chorus_server, body), 400)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param
    assert up.requests == []


def test_missing_and_bad_keys_are_401(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    assert_envelope(post(chorus_server, key=None), 401, "missing_api_key")
    assert_envelope(post(chorus_server, key="sk-wrong"), 401, "invalid_api_key")
    response = httpx.post(chorus_server.url + "/v1/chat/completions", json=BODY, headers={"authorization": "Basic abc"})
    assert_envelope(response, 401)
    assert_envelope(httpx.get(chorus_server.url + "/v1/models"), 401)
    # An attacker-sized header gets the same answer, not a crash.
    assert_envelope(post(chorus_server, key="x' OR 1=1 --" * 5000), 401)
    assert up.requests == []


def test_sdk_raises_authentication_error(chorus_server: LiveServer) -> None:
    with openai.OpenAI(base_url=chorus_server.url + "/v1", api_key="sk-nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("selector", ["gpt-test", "bot/id=missing", "model/name=", "model/name=dead/", "conversation/id=1", "bot/id=rival"])
def test_unknown_target_is_404_model_not_found(chorus_server: LiveServer, up: ScriptedUpstream, selector: str) -> None:
    error = assert_envelope(post(chorus_server, {**BODY, "model": selector}), 404, "model_not_found")
    assert "model/name=<provider>/<model>" in error["message"] and "bot/id=" in error["message"]
    assert error["param"] == "model"
    assert up.requests == []


def test_foreign_bot_404_is_identical_to_missing(chorus_server: LiveServer) -> None:
    foreign = post(chorus_server, {**BODY, "model": "bot/id=support"}, key=GLOBEX_KEY).json()
    missing = post(chorus_server, {**BODY, "model": "bot/id=supporx"}, key=GLOBEX_KEY).json()
    assert foreign["error"]["message"].replace("support", "?") == missing["error"]["message"].replace("supporx", "?")


def test_oversize_body_is_413(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 300_000}]}
    error = assert_envelope(post(chorus_server, big), 413, "request_too_large")
    assert "200000" in error["message"]
    assert up.requests == []


def test_unknown_path_and_method(chorus_server: LiveServer) -> None:
    assert_envelope(httpx.get(chorus_server.url + "/v1/nope"), 404)
    assert_envelope(httpx.get(chorus_server.url + "/v1/chat/completions"), 405)


def test_upstream_unreachable_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="model/name=dead/dead-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.code == "upstream_unreachable"


def test_upstream_dropped_connection_is_502(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Drop())
    assert_envelope(post(chorus_server), 502)


def test_upstream_timeout_is_504(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Hang(3))
    assert_envelope(post(chorus_server, {**BODY, "model": "model/name=slow/slow-model"}), 504, "upstream_timeout")


def test_stream_upstream_timeout_before_first_byte_is_504(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Hang(3))
    response = post(chorus_server, {**BODY, "model": "model/name=slow/slow-model", "stream": True})
    assert_envelope(response, 504)


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (404, "invalid_request_error"), (422, "invalid_request_error"), (429, "rate_limit_error")])
def test_upstream_4xx_is_relayed(chorus_server: LiveServer, up: ScriptedUpstream, status: int, kind: str) -> None:
    up.push(Error(status, message=f"context too long ({status}) for key {UPSTREAM_SECRET}", type=kind, code="ctx"))
    error = assert_envelope(post(chorus_server), status)
    assert f"context too long ({status})" in error["message"]
    assert error["type"] == kind and error["code"] == "ctx"


def test_upstream_4xx_relayed_on_stream_before_first_byte(client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Error(400, message="bad tool schema"))
    with pytest.raises(openai.BadRequestError) as info:
        list(client.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "bad tool schema" in str(info.value.message)


def test_upstream_5xx_and_auth_failures_are_502(chorus_server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(500, message="boom", type="server_error"))
    assert "boom" in assert_envelope(post(chorus_server), 502)["message"]
    up.push(Error(401, message=f"Incorrect API key provided: {UPSTREAM_SECRET}"))
    error = assert_envelope(post(chorus_server), 502)
    assert "credentials" in error["message"]


def test_failure_after_stream_start_ends_with_error_event(chorus_server: LiveServer, client: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content="one two three four five six", drop_after=3))
    with httpx.stream("POST", chorus_server.url + "/v1/chat/completions", headers={"authorization": f"Bearer {ACME_KEY}"},
                      json={**BODY, "stream": True}, timeout=20) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert UPSTREAM_SECRET not in "".join(events)
    up.push(Reply(content="one two three four five six", drop_after=3))
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="model/name=gpt-test", messages=[{"role": "user", "content": "x"}], stream=True))


@requires_spec
def test_errors_match_openai_schema(chorus_server: LiveServer) -> None:
    validate(post(chorus_server, key=None).json(), "ErrorResponse")
    validate(post(chorus_server, {**BODY, "model": "nope"}).json(), "ErrorResponse")


def test_health_has_request_id(chorus_server: LiveServer) -> None:
    response = httpx.get(chorus_server.url + "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")
