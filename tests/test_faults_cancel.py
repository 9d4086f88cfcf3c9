"""A client that leaves cancels its upstream work at every stage, and abandoned streams never
exhaust a provider's connection pool (issue #11, defect 1).

Cancellation is proven by outcome: the scripted upstream hangs far longer than the tests wait
(``HANG``), and counts a disconnect only when Chorus closes the upstream connection; a tool that
sleeps as long records that it was cancelled. Nothing here measures time; the waits are hang guards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Hang, RawStream, Reply, ScriptedUpstream
from chorus.tools import ToolContext, ToolDriver, ToolSpec

HANG = 600.0  # what the upstream and the slow tool would hold without a cancellation
GUARD = 30.0  # how long a test waits for what should happen at once

EXTRA = """
[[providers]]
id = "pair"
driver = "openai"
base_url = "{upstream}"
models = ["pair-model"]
max_connections = 2

[[skillsets]]
id = "slow"
workspace = "acme"
tool_timeout = 900
[[skillsets.tools]]
name = "ponder"
driver = "ponder"

[[bots]]
id = "thinker"
workspace = "acme"
model = "up/gpt-test"
skillsets = ["slow"]
"""


class Ponder(ToolDriver):
    """A tool that sleeps until cancelled; the test reads its events from another thread."""

    started = threading.Event()
    cancelled = threading.Event()

    def tools(self) -> list[ToolSpec]:
        return [ToolSpec(name=self.settings.name, description="think", parameters={"type": "object"})]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        Ponder.started.set()
        try:
            await asyncio.sleep(HANG)
        except asyncio.CancelledError:
            Ponder.cancelled.set()
            raise
        return "done"


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, EXTRA.format(upstream=upstream.base_url),
                         server_extra="keepalive_seconds = 600",  # no keep-alive event is the first byte
                         data_dir=str(tmp_path_factory.mktemp("cancel")))
    with LiveServer(make_app(config, tools={"ponder": Ponder})) as live:
        yield live


@pytest.fixture
def live(server: LiveServer, up: ScriptedUpstream) -> Iterator[LiveServer]:
    Ponder.started.clear()
    Ponder.cancelled.clear()
    yield server


def open_request(server: LiveServer, model: str, stream: bool) -> socket.socket:
    """Send a chat request on a raw connection (the test decides when the client leaves)."""
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "think hard"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=GUARD)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: chorus\r\ncontent-type: application/json\r\n"
                 + f"authorization: Bearer {ACME_KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = sock.recv(65536)
        assert data, f"the connection closed before {marker!r}: {received!r}"
        received += data
    return received


def wait_for(condition: Any, what: str) -> None:
    event = threading.Event()
    for _ in range(int(GUARD / 0.02)):
        if condition():
            return
        event.wait(0.02)
    raise AssertionError(f"not within the hang guard: {what}")


def leave(sock: socket.socket) -> None:
    sock.close()


@pytest.mark.parametrize("stream", [True, False])
def test_leaving_before_the_first_byte_cancels_the_upstream(live: LiveServer, up: ScriptedUpstream, stream: bool) -> None:
    up.push(Hang(HANG))
    sock = open_request(live, "model/name=up/gpt-test", stream)
    wait_for(lambda: len(up.requests) == 1, "the upstream got the request")
    leave(sock)
    assert up.wait_for_disconnect(GUARD), "the upstream request outlived the client"


def test_leaving_mid_stream_cancels_the_upstream(live: LiveServer, up: ScriptedUpstream) -> None:
    up.push(Reply("one two three four", chunk_delay=HANG))  # the first event, then a long pause
    sock = open_request(live, "model/name=up/gpt-test", True)
    read_until(sock, b"data: ")
    leave(sock)
    assert up.wait_for_disconnect(GUARD), "the upstream stream outlived the client"


PONDER = {"id": "c1", "type": "function", "function": {"name": "ponder", "arguments": "{}"}}
# A model that calls the tool straight away: no content, so the tool step comes before any byte.
CALL_FIRST = RawStream([json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **PONDER}]}}]}),
                        json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}), "[DONE]"])


@pytest.mark.parametrize(("stream", "answer"), [
    pytest.param(True, CALL_FIRST, id="stream-before-the-first-byte"),
    pytest.param(True, Reply(content=None, tool_calls=[PONDER]), id="stream-after-the-role-chunk"),
    pytest.param(False, Reply(content=None, tool_calls=[PONDER]), id="non-stream"),
])
def test_leaving_during_a_hidden_tool_step_cancels_the_tool(live: LiveServer, up: ScriptedUpstream, stream: bool,
                                                            answer: RawStream | Reply) -> None:
    up.push(answer)
    sock = open_request(live, "bot/id=thinker", stream)
    assert Ponder.started.wait(GUARD), "the tool never started"
    leave(sock)
    assert Ponder.cancelled.wait(GUARD), "the tool outlived the client"
    assert len(up.requests) == 1  # no further model call for a client that left


def test_abandoned_streams_do_not_exhaust_the_pool(live: LiveServer, up: ScriptedUpstream) -> None:
    """A provider with ``max_connections = 2``: rounds of two streams abandoned while the model
    thinks, each round filling the whole pool; every round's upstream requests are cancelled, and the
    provider still answers at the end. Without the cancellation the first round would hold both
    connections for ``HANG`` seconds and everything after it would wait."""
    rounds = 5
    for round_ in range(rounds):
        up.push(Hang(HANG), Hang(HANG))
        socks = [open_request(live, "model/name=pair/pair-model", True) for _ in range(2)]
        wait_for(lambda n=round_: len(up.requests) == 2 * (n + 1), f"round {round_}: both requests reached the upstream")
        for sock in socks:
            leave(sock)
        for _ in range(2):
            assert up.wait_for_disconnect(GUARD), f"round {round_}: an abandoned stream kept its connection"
    up.push(Reply("still here"), Reply("and streaming"))
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=GUARD) as client:
        answer = client.post("/v1/chat/completions", json={"model": "model/name=pair/pair-model", "messages": [{"role": "user", "content": "x"}]})
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "still here"
        streamed = client.post("/v1/chat/completions", json={"model": "model/name=pair/pair-model", "stream": True,
                                                               "messages": [{"role": "user", "content": "x"}]})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
