"""Two instances, one deployment: two ``chorus serve`` processes with their own data dirs share one
PostgreSQL (state and pgvector chunks) and one Redis, as instances behind a load balancer do.

What one instance acknowledged, the other serves: files and their bytes, vector stores and their
chunks, hidden steps of a parked agent turn. Config datasets are ingested by one instance, not
both. An instance killed mid-request loses nothing it had acknowledged.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from chorus.testing.postgres import SKIP_REASON, claim_schema, postgres_url
from chorus.testing.server import free_port
from chorus.testing.upstream import Reply, ScriptedUpstream

KEY = "sk-multi-instance-key"
OTHER_KEY = "sk-multi-instance-other"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _vector_store_table(schema: str) -> str | None:
    """``[vector_store]`` on the pgvector driver with a server that has the extension, if there is one."""
    try:
        from chorus_vectorstore_pgvector.testing import vector_postgres_url
    except ImportError:
        return None
    url = vector_postgres_url()
    return None if url is None else f'\n[vector_store]\ndriver = "pgvector"\nurl = "{url}"\nschema = "{schema}"\n'


pytestmark = [
    pytest.mark.skipif(postgres_url() is None, reason=SKIP_REASON),
    pytest.mark.skipif(not _redis_available(), reason="no Redis at 127.0.0.1:6379: start redis-server"),
]


class Instance:
    """One ``chorus serve`` process (its own data dir and port) and what it printed."""

    def __init__(self, name: str, config: Path, data: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chorus.cli", "serve", "--config", str(config), "--port", str(self.port)],
            env={**os.environ, "CHORUS_DATA_DIR": str(data)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"instance {self.name} exited:\n{''.join(self.lines)}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"instance {self.name} did not start:\n{''.join(self.lines)}")

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def deployment(tmp_path: Path, upstream: ScriptedUpstream) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B of one deployment (started one after the other so both sync the dataset)."""
    url = postgres_url()
    assert url is not None
    schema = claim_schema(url, prefix="multi")
    vectors = _vector_store_table(claim_schema(url, prefix="multivec"))
    if vectors is None:
        pytest.skip("no PostgreSQL with pgvector for the shared vector store: "
                    "pip install -e './contrib/chorus-vectorstore-pgvector[test]'")
    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nThe refund window at Acme is 45 days from delivery.\n")
    (docs / "shipping.md").write_text("# Shipping\n\nParcels leave the Lisbon warehouse every weekday at noon.\n")
    config = tmp_path / "chorus.toml"
    config.write_text(f"""
[state]
url = "{url}"
schema = "{schema}"
redis_url = "{REDIS_URL}"
{vectors}
[[providers]]
id = "up"
driver = "openai"
base_url = "{upstream.base_url}"
models = ["gpt-test"]

[[workspaces]]
id = "acme"
api_keys = ["{KEY}"]

[[workspaces]]
id = "globex"
api_keys = ["{OTHER_KEY}"]

[[datasets]]
id = "handbook"
workspace = "acme"
sources = ["handbook/*.md"]

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
datasets = ["handbook"]
""")
    upstream.reset()
    a = Instance("A", config, tmp_path / "a")
    b = Instance("B", config, tmp_path / "b")
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()
        upstream.reset()


def _added(output: str) -> int:
    return sum(int(n) for n in re.findall(r"dataset handbook: (\d+) added", output))


def test_two_instances_share_one_deployment(deployment: tuple[Instance, Instance], upstream: ScriptedUpstream) -> None:
    a, b = deployment

    # A config dataset is ingested once for the deployment: one instance adds its two files, the
    # other finds them stored (unchanged) or skips while the first holds the lock.
    assert _added(a.output()) + _added(b.output()) == 2, a.output() + b.output()
    with b.client() as on_b:
        found = on_b.vector_stores.search("handbook", query="refund window")
        assert "45 days" in found.data[0].content[0].text

    # A file uploaded and attached through A is listed, readable, searchable and answerable through B.
    with a.client() as on_a:
        uploaded = on_a.files.create(file=("warranty.md", b"# Warranty\n\nEvery kettle has a 7 year warranty.\n"),
                                     purpose="assistants")
        store = on_a.vector_stores.create(name="policies", file_ids=[uploaded.id])
    with b.client() as on_b:
        assert on_b.files.content(uploaded.id).read() == b"# Warranty\n\nEvery kettle has a 7 year warranty.\n"
        assert [f.id for f in on_b.vector_stores.files.list(store.id)] == [uploaded.id]
        hits = on_b.vector_stores.search(store.id, query="kettle warranty")
        assert hits.data and hits.data[0].file_id == uploaded.id and "7 year" in hits.data[0].content[0].text
        upstream.push(Reply(content="Seven years [1]."))
        answer = on_b.chat.completions.create(model="bot/id=agent",
                                              messages=[{"role": "user", "content": "How long is the refund window?"}])
        assert answer.choices[0].message.content is not None
        sent = upstream.requests[-1].json["messages"]
        assert "45 days" in sent[0]["content"]  # B retrieved the config dataset A (or B) ingested
    # Another workspace sees none of it, through either instance.
    with b.client(OTHER_KEY) as rival, pytest.raises(openai.NotFoundError):
        rival.files.retrieve(uploaded.id)
    with a.client(OTHER_KEY) as rival, pytest.raises(openai.NotFoundError):
        rival.vector_stores.retrieve(store.id)

    # A mixed client/server tool turn started on A resumes on B with its hidden steps.
    client_tool = {"type": "function", "function": {"name": "ask_user", "parameters": {"type": "object", "properties": {}}}}
    ask = [{"role": "user", "content": "what is 6*7, and ask me"}]
    upstream.push(Reply(content=None, tool_calls=[
        {"id": "s1", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "6*7"}'}},
        {"id": "u1", "type": "function", "function": {"name": "ask_user", "arguments": "{}"}},
    ]))
    with a.client() as on_a:
        first = on_a.chat.completions.create(model="bot/id=agent", messages=ask, tools=[client_tool])  # type: ignore[arg-type,list-item]
    assert [c.id for c in first.choices[0].message.tool_calls or []] == ["u1"]
    upstream.push(Reply(content="42, and thanks."))
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "u1", "type": "function", "function": {"name": "ask_user", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "u1", "content": "go on"}]
    with b.client() as on_b:
        second = on_b.chat.completions.create(model="bot/id=agent", messages=history, tools=[client_tool])  # type: ignore[arg-type,list-item]
    assert second.choices[0].message.content == "42, and thanks."
    sent = upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant", "tool", "tool"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["s1", "u1"]
    assert {"role": "tool", "tool_call_id": "s1", "content": "{\"result\":42}"} in sent


def test_killing_an_instance_mid_request_loses_nothing_acknowledged(deployment: tuple[Instance, Instance]) -> None:
    a, b = deployment
    acknowledged: dict[str, bytes] = {}
    stop = threading.Event()

    def upload_until_killed() -> None:
        with a.client() as on_a:
            for i in range(10_000):
                if stop.is_set():
                    return
                body = (f"document {i}\n".encode()) * (200 + i % 50)
                try:
                    made = on_a.files.create(file=(f"doc{i}.txt", body), purpose="assistants")
                except (openai.APIConnectionError, openai.APIStatusError):
                    return  # the instance died under this request: it acknowledged nothing
                acknowledged[made.id] = body

    uploader = threading.Thread(target=upload_until_killed)
    uploader.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20 and time.monotonic() < deadline and uploader.is_alive():
        time.sleep(0.01)
    a.process.kill()  # SIGKILL: no shutdown, requests in flight are cut
    a.process.wait(timeout=10)
    stop.set()
    uploader.join(timeout=30)
    assert len(acknowledged) >= 20
    with b.client() as on_b:
        listed = {f.id: f.bytes for f in on_b.files.list(limit=100)}
        assert set(acknowledged) <= set(listed)
        for file_id, size in listed.items():  # nothing half written: every listed file reads whole
            assert len(on_b.files.content(file_id).read()) == size
        for file_id, body in acknowledged.items():
            assert on_b.files.content(file_id).read() == body
        # B keeps serving the deployment on its own.
        assert on_b.vector_stores.search("handbook", query="refund window").data
