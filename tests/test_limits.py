"""Limits and budgets end to end: requests and tokens per window, spend per period, across instances.

The limit window is shortened (``[server] limit_window_seconds``) so a test sees a window reset
without waiting a minute; the budget's period stays a day (it is exhausted, never waited out).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from chorus.testing.config import GLOBEX_KEY, STATE_ENV, state_table
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream
from tests.test_admin import ADMIN_KEY, USER, create_key, sdk, start

T = TypeVar("T")
REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 2.0
HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")

WORKSPACE_LIMITS = """
[[workspaces]]
id = "limited"
api_keys = ["sk-limited-workspace-key"]
limits = { rpm = 3 }

[[workspaces]]
id = "thrifty"
api_keys = ["sk-thrifty-workspace-key"]
budget = { amount = 0.03, period = "day" }
"""


@pytest.fixture(scope="module")
def limited(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start(upstream, tmp_path_factory.mktemp("limits"), WORKSPACE_LIMITS, window=WINDOW)
    yield server
    server.stop()


@pytest.fixture
def admin(limited: LiveServer, up: ScriptedUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.url + "/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                      timeout=20) as client:
        yield client


def eventually(check: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(interval)


def chat(client: openai.OpenAI, model: str = "model/name=up/gpt-test") -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=USER)


def test_a_key_hits_its_request_limit_with_the_headers_then_recovers(limited: LiveServer, admin: httpx.Client,
                                                                     up: ScriptedUpstream) -> None:
    created = create_key(admin, rpm=2)
    with sdk(limited, created["key"]) as client:
        # start right after a window boundary so the three requests share one window
        eventually(lambda: True if (time.time() % WINDOW) < WINDOW / 2 else None, timeout=WINDOW * 2)
        up.push(Reply(content="a"), Reply(content="b"))
        first, second = chat(client), chat(client)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == ["1", "0"]
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
        error = refused.value
        body: Any = error.body
        assert error.status_code == 429 and body["code"] == "rate_limit_exceeded" and body["type"] == "requests"
        assert "requests" in body["message"]
        assert all(name in error.response.headers for name in HEADERS)
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(up.requests) == 2  # the refused request never reached the upstream

        def recovered() -> Any:
            up.push(Reply(content="again"))
            try:
                return chat(client)
            except openai.RateLimitError:
                up.reset()
                return None

        again = eventually(recovered, timeout=WINDOW * 3, interval=0.2)
        assert again.parse().choices[0].message.content == "again"


def test_a_key_hits_its_token_limit(limited: LiveServer, admin: httpx.Client, up: ScriptedUpstream) -> None:
    created = create_key(admin, tpm=1000)
    with sdk(limited, created["key"]) as client:
        eventually(lambda: True if (time.time() % WINDOW) < WINDOW / 4 else None, timeout=WINDOW * 2)
        up.push(Reply(content="big", usage={"prompt_tokens": 900, "completion_tokens": 150, "total_tokens": 1050}))
        first = chat(client)
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert first.headers["x-ratelimit-remaining-tokens"] == "1000"

        def refused() -> Any:
            up.push(Reply(content="more"))
            try:
                chat(client)
            except openai.RateLimitError as exc:
                up.reset()
                return exc
            return None

        error = eventually(refused, timeout=WINDOW)
        body: Any = error.body
        assert body["code"] == "rate_limit_exceeded" and body["type"] == "tokens" and "tokens" in body["message"]
        assert error.response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert all(name in error.response.headers for name in TOKEN_HEADERS)


def test_a_key_hits_its_budget_from_the_configured_prices(limited: LiveServer, admin: httpx.Client,
                                                          up: ScriptedUpstream) -> None:
    # one call with the default usage (10 in, 5 out) on priced/gpt-priced costs 0.02 USD
    created = create_key(admin, budget={"amount": 0.03, "period": "day"})
    assert created["budget"] == {"amount": 0.03, "period": "day"}
    answered = 0
    with sdk(limited, created["key"]) as client:
        up.push(Reply(content="free"))
        chat(client, "model/name=up/gpt-test")  # an unpriced model costs nothing

        def refused() -> Any:
            nonlocal answered
            up.push(Reply(content="more"))
            try:
                chat(client, "model/name=priced/gpt-priced")
            except openai.RateLimitError as exc:
                up.reset()
                return exc
            answered += 1
            return None

        error = eventually(refused, timeout=5)
        body: Any = error.body
        assert error.status_code == 429 and body["code"] == "insufficient_quota" and body["type"] == "insufficient_quota"
        assert "budget" in body["message"]
    assert answered == 2  # 0.02 spent is under 0.03; 0.04 is not
    usage = admin.get("/usage", params={"group_by": "key"}).json()["data"]
    spent = next(row["cost"] for row in usage if row["key"] == created["id"])
    assert spent == pytest.approx(0.02 * answered)


def test_workspace_limits_from_the_config_apply_to_every_key(limited: LiveServer, admin: httpx.Client,
                                                             up: ScriptedUpstream) -> None:
    managed = create_key(admin, "limited", rpm=100)
    with sdk(limited, "sk-limited-workspace-key") as config_key, sdk(limited, managed["key"]) as managed_key:
        eventually(lambda: True if (time.time() % WINDOW) < WINDOW / 4 else None, timeout=WINDOW * 2)
        up.push(Reply(content="a"), Reply(content="b"), Reply(content="c"))
        first = config_key.models.with_raw_response.list()  # limits count chat requests only
        assert "x-ratelimit-limit-requests" not in first.headers
        replies = [chat(config_key), chat(managed_key), chat(config_key)]
        # the workspace's 3 per window is tighter than the key's 100: its headers are the ones shown
        assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as refused:
            chat(managed_key)
        body: Any = refused.value.body
        assert "workspace limited" in body["message"]
    up.reset()


def test_unlimited_keys_get_no_rate_limit_headers(limited: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply(content="a"))
    with sdk(limited, GLOBEX_KEY) as client:
        reply = chat(client)
    assert not [h for h in reply.headers if h.startswith("x-ratelimit")]


def test_streams_of_a_limited_key_carry_the_headers(limited: LiveServer, admin: httpx.Client,
                                                    up: ScriptedUpstream) -> None:
    created = create_key(admin, rpm=50, tpm=100_000)
    up.push(Reply(content="streamed answer"))
    with sdk(limited, created["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(model="model/name=up/gpt-test", messages=USER, stream=True)
        assert all(name in raw.headers for name in HEADERS + TOKEN_HEADERS)
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "streamed answer"


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def with_redis(data_dir: Path) -> str:
    """A ``[state]`` table with Redis signals (on the test PostgreSQL too when the suite runs on it)."""
    if os.environ.get(STATE_ENV) == "postgresql":
        return state_table(key=str(data_dir)) + f'redis_url = "{REDIS_URL}"\n'
    return f'\n[state]\nredis_url = "{REDIS_URL}"\nschema = "t_{secrets.token_hex(6)}"\n'


@pytest.mark.parametrize("signals", ["state", pytest.param("redis", marks=pytest.mark.skipif(
    not redis_available(), reason="no Redis at 127.0.0.1:6379: start redis-server"))])
def test_revocation_reaches_a_second_instance_within_seconds(upstream: ScriptedUpstream, up: ScriptedUpstream,
                                                            tmp_path: Path, signals: str) -> None:
    """Two instances on one state (one data dir; one PostgreSQL schema with CHORUS_TEST_STATE=postgresql),
    notified through the state store's own channel or through Redis."""
    data = tmp_path / "shared"
    extra = with_redis(data) if signals == "redis" else ""
    first = start(upstream, data, extra)
    second = start(upstream, data, extra)
    try:
        with httpx.Client(base_url=first.url + "/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            created = create_key(admin, rpm=1000)
            with sdk(second, created["key"]) as client:
                up.push(Reply(content="works"))
                assert chat(client).parse().choices[0].message.content == "works"  # now cached on the second
                revoked_at = time.monotonic()
                assert admin.delete(f"/workspaces/acme/keys/{created['id']}").status_code == 200

                def refused() -> bool | None:
                    try:
                        client.models.list()
                    except openai.AuthenticationError:
                        return True
                    return None

                eventually(refused, timeout=5, interval=0.02)
                assert time.monotonic() - revoked_at < 5  # "within a second" in practice; no tight timing here
    finally:
        second.stop()
        first.stop()


def test_a_limit_holds_across_two_instances(upstream: ScriptedUpstream, up: ScriptedUpstream, tmp_path: Path) -> None:
    """Each instance counts locally and syncs with the shared counter every 0.2 s: a key's requests
    on both add up to one limit."""
    first = start(upstream, tmp_path / "shared")
    second = start(upstream, tmp_path / "shared")
    try:
        with httpx.Client(base_url=first.url + "/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            created = create_key(admin, rpm=4)
        with sdk(first, created["key"]) as a, sdk(second, created["key"]) as b:
            eventually(lambda: True if (time.time() % 60) < 50 else None, timeout=15)  # not near a window's end
            up.push(*[Reply(content=str(i)) for i in range(4)])
            for client in (a, b, a, b):
                chat(client)
            time.sleep(1.0)  # a few sync intervals
            for client in (a, b):
                with pytest.raises(openai.RateLimitError) as refused:
                    chat(client)
                assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    finally:
        second.stop()
        first.stop()


def test_a_workspace_budget_from_the_config_covers_every_key(limited: LiveServer, admin: httpx.Client,
                                                            up: ScriptedUpstream) -> None:
    managed = create_key(admin, "thrifty")
    with sdk(limited, "sk-thrifty-workspace-key") as config_key, sdk(limited, managed["key"]) as managed_key:
        up.push(Reply(content="a"), Reply(content="b"))
        chat(config_key, "model/name=priced/gpt-priced")   # 0.02
        chat(managed_key, "model/name=priced/gpt-priced")  # 0.04: the workspace's 0.03 is used up
        for client in (config_key, managed_key):
            with pytest.raises(openai.RateLimitError) as refused:
                chat(client, "model/name=priced/gpt-priced")
            body: Any = refused.value.body
            assert body["code"] == "insufficient_quota" and "workspace thrifty" in body["message"]
    assert len(up.requests) == 2
