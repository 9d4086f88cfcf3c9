"""Providers fail over: retries before the first byte, fallback models, the circuit breaker.

A live Chorus in front of the scripted upstream, with providers that opt into failover (the test
configuration turns it off elsewhere). Every provider here has its own model name, so the upstream's
recorded requests say which provider made each attempt; waits are proven by the upstream's recorded
arrival times (``Recorded.at``), never by timing the test.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import tempfile
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from chorus.config import parse_config
from chorus.contract.retry import FALLBACK, FINAL, RETRY, FailoverPolicy, backoff, classify, retry_after_seconds
from chorus.errors import (
    ConfigError,
    UpstreamCircuitOpen,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chorus.testing.config import ACME_KEY, UPSTREAM_SECRET, make_config
from chorus.testing.gateway import make_app, serve
from chorus.testing.server import LiveServer, free_port
from chorus.testing.upstream import Error, Hang, Reply, ScriptedUpstream

FAST = "retry_backoff = 0.01\nretry_backoff_max = 0.05\n"


def providers(upstream: str) -> str:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return f"""
[[providers]]
id = "flaky"
driver = "openai"
base_url = "{upstream}"
models = ["flaky-model"]
retries = 2
retry_after_max = 5
{FAST}
[[providers]]
id = "backup"
driver = "openai"
base_url = "{upstream}"
models = ["backup-model"]

[[providers]]
id = "refusing"
driver = "openai"
base_url = "{dead}"
models = ["refused-model"]
retries = 1
connect_timeout = 2.0
{FAST}
[[providers]]
id = "hanging"
driver = "openai"
base_url = "{upstream}"
models = ["hanging-model"]
timeout = 0.5
retries = 1
{FAST}
[[providers]]
id = "fragile"
driver = "openai"
base_url = "{upstream}"
models = ["fragile-model"]
breaker_failures = 2
breaker_cooldown_seconds = 60

[[providers]]
id = "brittle"
driver = "openai"
base_url = "{upstream}"
models = ["brittle-model"]
breaker_failures = 1
breaker_cooldown_seconds = 60

[[providers]]
id = "glass"
driver = "openai"
base_url = "{upstream}"
models = ["glass-model"]
breaker_failures = 1
breaker_cooldown_seconds = 60

[[bots]]
id = "failsafe"
workspace = "acme"
model = "flaky/flaky-model"
fallback_models = ["refusing/refused-model", "backup/backup-model"]
backstory = "You never give up."
"""


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream) -> Iterator[LiveServer]:
    with serve(make_config(upstream.base_url, providers(upstream.base_url))) as live:
        yield live


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=ACME_KEY, max_retries=0)


def ask(server: LiveServer, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {ACME_KEY}"})


def models_asked(up: ScriptedUpstream) -> list[str]:
    return [r.json["model"] for r in up.requests if r.path == "/v1/chat/completions"]


def envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert UPSTREAM_SECRET not in response.text and "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


def cool_down(server: LiveServer, provider: str) -> None:
    """Let the provider's cool-down pass now: its circuit opened one cool-down ago (no test waits a
    minute, and none depends on how fast it runs)."""
    breaker = server.app.state.services.failover_stats.breakers[provider]
    assert breaker.opened_at is not None
    breaker.opened_at -= breaker.cooldown


def stats(server: LiveServer, provider: str) -> dict[str, int]:
    return server.app.state.services.failover_stats.of(provider).as_dict()  # type: ignore[no-any-return]


# -- retries --------------------------------------------------------------------------------------


def test_503_then_success_is_retried_and_answered(server: LiveServer, up: ScriptedUpstream) -> None:
    before = stats(server, "flaky")["retries"]
    up.push(Error(503, "overloaded", type="server_error"), Reply("recovered"))
    with client(server) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="model/name=flaky/flaky-model", messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "recovered"
    assert completion.model == "model/name=flaky/flaky-model"
    assert raw.headers["x-chorus-upstream"] == "flaky/flaky-model"
    assert models_asked(up) == ["flaky-model", "flaky-model"]
    assert stats(server, "flaky")["retries"] == before + 1


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(server: LiveServer, up: ScriptedUpstream, status: int) -> None:
    up.push(Error(status, "try again"), Reply("fine"))
    response = ask(server, "model/name=flaky/flaky-model")
    assert response.status_code == 200, response.text
    assert models_asked(up) == ["flaky-model", "flaky-model"]


def test_retries_are_bounded_and_the_last_failure_is_reported(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(503), Error(503), Error(503), Reply("never asked"))
    envelope(ask(server, "model/name=flaky/flaky-model"), 502, "upstream_error")
    assert models_asked(up) == ["flaky-model"] * 3  # one attempt and retries = 2
    assert up.pending == 1


def test_429_retry_after_is_honoured(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(429, "slow down", type="rate_limit_error", headers={"retry-after": "1"}), Reply("patience"))
    with client(server) as sdk:
        completion = sdk.chat.completions.create(model="model/name=flaky/flaky-model",
                                                 messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "patience"
    first, second = up.requests
    # the backoff alone would wait at most 0.05 s: the second attempt came after the header's second
    assert second.at - first.at >= 1.0


def test_retry_after_as_an_http_date_is_honoured(server: LiveServer, up: ScriptedUpstream) -> None:
    date = math.floor(time.time()) + 2  # an HTTP date has whole seconds
    up.push(Error(503, "maintenance", headers={"retry-after": email.utils.formatdate(date, usegmt=True)}), Reply("back"))
    response = ask(server, "model/name=flaky/flaky-model")
    assert response.status_code == 200, response.text
    first, second = up.requests
    wall_minus_monotonic = time.time() - time.monotonic()
    assert second.at + wall_minus_monotonic >= date - 0.01  # not before the date (0.01: reading the two clocks)
    assert second.at > first.at


def test_retry_after_beyond_the_cap_is_not_retried(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(429, "quota", type="rate_limit_error", headers={"retry-after": "3600"}), Reply("never"))
    response = ask(server, "model/name=flaky/flaky-model")
    error = envelope(response, 429)
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "3600"  # the client learns how long to wait
    assert models_asked(up) == ["flaky-model"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_request_errors_are_never_retried(server: LiveServer, up: ScriptedUpstream, status: int) -> None:
    up.push(Error(status, "you did it wrong", code="bad"), Reply("never"), Reply("never"))
    response = ask(server, "model/name=flaky/flaky-model")
    assert response.status_code in (status, 502)  # 401/403 mean the gateway's key: 502
    assert models_asked(up) == ["flaky-model"]
    # nor fallen back from: a bot with fallbacks relays a 400 as well
    up.reset()
    up.push(Error(400, "bad request", param="messages"), Reply("never"))
    envelope(ask(server, "bot/id=failsafe"), 400)
    assert models_asked(up) == ["flaky-model"]


def test_a_connection_refused_is_retried(server: LiveServer, up: ScriptedUpstream) -> None:
    before = stats(server, "refusing")["retries"]
    envelope(ask(server, "model/name=refusing/refused-model"), 502, "upstream_unreachable")
    assert stats(server, "refusing")["retries"] == before + 1
    assert up.requests == []


def test_a_timeout_before_the_first_byte_is_retried(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Hang(30), Reply("second wind"))
    response = ask(server, "model/name=hanging/hanging-model", stream=True)
    assert response.status_code == 200, response.text
    assert "second wind" in "".join(_contents(response.text))
    assert models_asked(up) == ["hanging-model", "hanging-model"]
    assert up.wait_for_disconnect()  # the hung attempt's connection was closed, not left waiting


# -- streams: retried before the first byte, never after -----------------------------------------


def _contents(sse: str) -> list[str]:
    out = []
    for line in sse.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices") or []:
                out.append(choice.get("delta", {}).get("content") or "")
    return out


def test_a_stream_failing_before_its_first_byte_is_retried(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(503), Reply("hello again"))
    with client(server) as sdk:
        with sdk.chat.completions.with_streaming_response.create(
            model="model/name=flaky/flaky-model", messages=[{"role": "user", "content": "hi"}], stream=True,
        ) as raw:
            assert raw.headers["x-chorus-upstream"] == "flaky/flaky-model"
            chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello again"
    assert {c.model for c in chunks} == {"model/name=flaky/flaky-model"}
    assert models_asked(up) == ["flaky-model", "flaky-model"]


def test_a_stream_failing_after_its_first_byte_is_not_retried(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply("one two three four", drop_after=2), Reply("never sent"))
    seen: list[str] = []
    with client(server) as sdk:
        stream = sdk.chat.completions.create(model="model/name=flaky/flaky-model",
                                             messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                if chunk.choices:
                    seen.append(chunk.choices[0].delta.content or "")
    assert "one" in "".join(seen)
    assert "closed the connection" in str(raised.value)  # the mid-stream error event
    assert models_asked(up) == ["flaky-model"]
    assert up.pending == 1


# -- fallbacks ------------------------------------------------------------------------------------


def test_bot_fallback_models_are_tried_in_order(server: LiveServer, up: ScriptedUpstream,
                                                caplog: pytest.LogCaptureFixture) -> None:
    up.push(Error(503), Error(503), Error(503), Reply("from the backup"))
    with caplog.at_level(logging.INFO, logger="chorus.failover"), client(server) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="bot/id=failsafe",
                                                            messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "from the backup"
    assert completion.model == "bot/id=failsafe"
    assert raw.headers["x-chorus-upstream"] == "backup/backup-model"
    # flaky three times (its retries), refusing twice (never reached the upstream), then the backup
    assert models_asked(up) == ["flaky-model"] * 3 + ["backup-model"]
    assert up.requests[-1].json["messages"][0] == {"role": "system", "content": "You never give up."}
    falling = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(falling) == 2
    assert "flaky/flaky-model" in falling[0] and "refusing/refused-model" in falling[0]
    assert "refusing/refused-model" in falling[1] and "backup/backup-model" in falling[1]


def test_bot_fallback_when_streaming(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(500), Error(500), Error(500), Reply("streamed backup"))
    response = ask(server, "bot/id=failsafe", stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-chorus-upstream"] == "backup/backup-model"
    assert "".join(_contents(response.text)) == "streamed backup"
    assert '"model": "bot/id=failsafe"' in response.text or '"model":"bot/id=failsafe"' in response.text


def test_a_model_selector_names_a_fallback_chain(server: LiveServer, up: ScriptedUpstream) -> None:
    selector = "model/name=refusing/refused-model,backup/backup-model"
    up.push(Reply("chained"))
    with client(server) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=selector, messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.model == selector
    assert completion.choices[0].message.content == "chained"
    assert raw.headers["x-chorus-upstream"] == "backup/backup-model"
    assert models_asked(up) == ["backup-model"]
    # the primary answers when it can: the chain is only a fallback
    up.reset()
    response = ask(server, "model/name=backup/backup-model,flaky/flaky-model")
    assert response.headers["x-chorus-upstream"] == "backup/backup-model"
    assert response.json()["model"] == "model/name=backup/backup-model,flaky/flaky-model"


def test_plain_answers_name_their_upstream(server: LiveServer, up: ScriptedUpstream) -> None:
    response = ask(server, "model/name=backup-model")
    assert response.status_code == 200
    assert response.headers["x-chorus-upstream"] == "backup/backup-model"
    assert response.json()["model"] == "model/name=backup-model"


@pytest.mark.parametrize(("selector", "named"), [
    ("model/name=backup/backup-model,", "an empty entry"),
    ("model/name=,backup/backup-model", "an empty entry"),
    ("model/name=backup/backup-model, ,flaky/flaky-model", "an empty entry"),
])
def test_a_bad_fallback_chain_is_a_clear_404(server: LiveServer, up: ScriptedUpstream, selector: str, named: str) -> None:
    error = envelope(ask(server, selector), 404, "model_not_found")
    assert error["param"] == "model"
    assert named in error["message"] and "fallback chain" in error["message"]
    assert up.requests == []


def test_a_fallback_chain_naming_an_unknown_model_is_a_clear_404() -> None:
    # (the suite's configuration has a "*" provider that takes any name; this one has none)
    with serve(parse_config(_provider(), env={})) as live:
        response = httpx.post(live.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                              json={"model": "model/name=p/m,nowhere", "messages": [{"role": "user", "content": "x"}]})
        error = envelope(response, 404, "model_not_found")
        assert "'nowhere'" in error["message"] and "fallback chain" in error["message"]
        response = httpx.post(live.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                              json={"model": "model/name=nowhere", "messages": [{"role": "user", "content": "x"}]})
        assert "fallback chain 'model/name=<provider>/<model>,<provider>/<model>'" in envelope(response, 404)["message"]


def test_a_fallback_chain_is_not_an_embedding_model(server: LiveServer, up: ScriptedUpstream) -> None:
    response = httpx.post(server.url + "/v1/embeddings", headers={"authorization": f"Bearer {ACME_KEY}"},
                          json={"model": "model/name=backup/backup-model,flaky/flaky-model", "input": "x"})
    error = envelope(response, 400)
    assert error["param"] == "model" and "chat completions" in error["message"]


# -- the circuit breaker --------------------------------------------------------------------------


def test_the_circuit_opens_skips_the_provider_and_half_opens(server: LiveServer, up: ScriptedUpstream,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chorus.failover")
    up.push(Error(503), Error(503))
    for _ in range(2):  # breaker_failures = 2 consecutive failures
        envelope(ask(server, "model/name=fragile/fragile-model"), 502)
    assert stats(server, "fragile")["circuit_opens"] == 1
    opened = [r for r in caplog.records if "circuit open after 2 consecutive failures" in r.getMessage()]
    assert len(opened) == 1 and opened[0].levelno == logging.WARNING

    # open: skipped without an upstream request, a clear 503 ...
    response = ask(server, "model/name=fragile/fragile-model")
    error = envelope(response, 503, "upstream_circuit_open")
    assert "circuit is open" in error["message"] and "fragile" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    # ... or the fallback answers at once
    up.push(Reply("covering"))
    response = ask(server, "model/name=fragile/fragile-model,backup/backup-model")
    assert response.headers["x-chorus-upstream"] == "backup/backup-model"
    assert models_asked(up) == ["fragile-model", "fragile-model", "backup-model"]

    # after the cool-down one trial request goes through; it succeeds, the circuit closes
    cool_down(server, "fragile")
    up.push(Reply("healed"), Reply("healthy"))
    response = ask(server, "model/name=fragile/fragile-model")
    assert response.status_code == 200, response.text
    assert response.headers["x-chorus-upstream"] == "fragile/fragile-model"
    assert ask(server, "model/name=fragile/fragile-model").status_code == 200
    closed = [r for r in caplog.records if "circuit closed" in r.getMessage()]
    assert len(closed) == 1 and closed[0].levelno == logging.INFO
    assert server.app.state.services.failover_stats.circuits()["fragile"] == "closed"


def test_a_failed_trial_reopens_the_circuit(upstream: ScriptedUpstream) -> None:
    extra = f"""
[[providers]]
id = "shaky"
driver = "openai"
base_url = "{upstream.base_url}"
models = ["shaky-model"]
breaker_failures = 1
breaker_cooldown_seconds = 60
"""
    upstream.reset()
    try:
        with serve(make_config(upstream.base_url, extra)) as live:
            upstream.push(Error(500), Error(500), Reply("finally"))
            envelope(ask(live, "model/name=shaky/shaky-model"), 502)            # opens
            envelope(ask(live, "model/name=shaky/shaky-model"), 503, "upstream_circuit_open")
            cool_down(live, "shaky")
            envelope(ask(live, "model/name=shaky/shaky-model"), 502)            # the trial fails: open again
            envelope(ask(live, "model/name=shaky/shaky-model"), 503, "upstream_circuit_open")
            cool_down(live, "shaky")
            assert ask(live, "model/name=shaky/shaky-model").status_code == 200  # the next trial succeeds
            assert models_asked(upstream) == ["shaky-model"] * 3
    finally:
        upstream.reset()


def test_every_circuit_open_is_a_clear_503(server: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Error(502), Error(502))
    envelope(ask(server, "model/name=brittle/brittle-model"), 502)
    envelope(ask(server, "model/name=glass/glass-model"), 502)
    response = ask(server, "model/name=brittle/brittle-model,glass/glass-model", stream=True)
    error = envelope(response, 503, "upstream_circuit_open")
    assert "Every upstream" in error["message"] and "brittle/brittle-model" in error["message"]
    assert "glass/glass-model" in error["message"]
    assert models_asked(up) == ["brittle-model", "glass-model"]


def test_request_errors_do_not_open_the_circuit(upstream: ScriptedUpstream) -> None:
    extra = f"""
[[providers]]
id = "strict"
driver = "openai"
base_url = "{upstream.base_url}"
models = ["strict-model"]
breaker_failures = 1
breaker_cooldown_seconds = 60
"""
    upstream.reset()
    try:
        with serve(make_config(upstream.base_url, extra)) as live:
            upstream.push(Error(400, "bad"), Error(422, "worse"), Reply("fine"))
            envelope(ask(live, "model/name=strict/strict-model"), 400)
            envelope(ask(live, "model/name=strict/strict-model"), 422)
            assert ask(live, "model/name=strict/strict-model").status_code == 200
    finally:
        upstream.reset()


# -- configuration --------------------------------------------------------------------------------


def _provider(**keys: Any) -> dict[str, Any]:
    return {"data_dir": tempfile.mkdtemp(prefix="chorus-test-"),
            "providers": [{"id": "p", "driver": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], **keys}],
            "workspaces": [{"id": "w", "api_keys": ["k"]}]}


@pytest.mark.parametrize(("keys", "message"), [
    ({"retries": -1}, r"providers\[0\]: Expected `int` >= 0 - at `retries`"),
    ({"retries": "two"}, r"providers\[0\]: Expected `int`, got `str` - at `retries`"),
    ({"retry_backoff": -0.5}, r"at `retry_backoff`"),
    ({"retry_backoff": 5, "retry_backoff_max": 1}, r"retry_backoff_max \(1\) is below retry_backoff \(5\)"),
    ({"retry_after_max": -1}, r"at `retry_after_max`"),
    ({"breaker_failures": -3}, r"at `breaker_failures`"),
    ({"breaker_cooldown_seconds": 0}, r"Expected `float` > 0.0 - at `breaker_cooldown_seconds`"),
    ({"proxy": "socks5://user:hunter2@proxy:1080"}, r"proxy scheme 'socks5' is not supported"),
    ({"proxy": "http://user:hunter2@proxy:1080/path"}, r"must not have a path"),
    ({"retry": 2}, r"unknown field `retry`"),
])
def test_bad_failover_settings_are_clear_config_errors(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        make_app(parse_config(_provider(**keys), env={}))
    assert "hunter2" not in str(raised.value)


def test_a_fallback_model_that_matches_nothing_is_a_config_error() -> None:
    raw = _provider()
    raw["bots"] = [{"id": "b", "workspace": "w", "model": "p/m", "fallback_models": ["p/m", "nowhere/x"]}]
    with pytest.raises(ConfigError, match=r"bots\[0\]\.fallback_models\[1\] 'nowhere/x' matches no provider"):
        make_app(parse_config(raw, env={}))
    raw["bots"][0]["fallback_models"] = ["p/m,p/n"]
    with pytest.raises(ConfigError, match=r"fallback_models\[0\] 'p/m,p/n' matches no provider .*one per list entry"):
        make_app(parse_config(raw, env={}))


def test_the_production_defaults_and_the_test_defaults() -> None:
    table = tomllib.loads('[[providers]]\nid = "p"\ndriver = "openai"\n')["providers"][0]
    policy = FailoverPolicy()
    assert (policy.retries, policy.breaker_failures, policy.breaker_cooldown_seconds) == (2, 5, 30.0)
    assert table == {"id": "p", "driver": "openai"}
    config = make_config("http://127.0.0.1:9/v1", '[[providers]]\nid = "mine"\ndriver = "openai"\nretries = 3\n')
    by_id = {p["id"]: p for p in config.providers}
    assert (by_id["up"]["retries"], by_id["up"]["breaker_failures"]) == (0, 0)  # the suite stays deterministic
    assert (by_id["mine"]["retries"], by_id["mine"]["breaker_failures"]) == (3, 0)


# -- the policy itself ----------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5e3", "Mon, 99 Foo 2026"):
        assert retry_after_seconds(unreadable, now) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = FailoverPolicy(retry_backoff=0.5, retry_backoff_max=3.0)
    rand = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [backoff(policy, retry, rand) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_what_is_retried_fallen_back_from_or_final() -> None:
    assert classify(UpstreamUnavailable("x")) == RETRY
    assert classify(UpstreamTimeout("x")) == RETRY
    assert classify(UpstreamConnectionLost("x")) == RETRY
    assert classify(UpstreamError("x")) == RETRY  # a driver's generic 502
    assert classify(UpstreamError("x", upstream_status=503)) == RETRY
    for status in (408, 409, 429):
        assert classify(UpstreamError("x", status_code=status, upstream_status=status)) == RETRY
    assert classify(UpstreamError("x", upstream_status=401)) == FALLBACK  # the gateway's key, relayed as 502
    assert classify(UpstreamCircuitOpen("x")) == FALLBACK
    assert classify(UpstreamInvalidResponse("x")) == FINAL
    for status in (400, 401, 403, 404, 413, 415, 422):
        assert classify(UpstreamError("x", status_code=status, upstream_status=status)) == FINAL
    assert classify(UpstreamError("x", status_code=400)) == FINAL  # a driver's own request error (llama.cpp)
