"""``chorus serve --workers 2`` logs in every process as one process does (issue #11, defect 8).

Workers are spawned interpreters: unless they configure logging themselves, Chorus's INFO lines
(dataset sync, disconnects) vanish and warnings print bare, without time or level.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from chorus.testing.server import free_port
from chorus.testing.upstream import Error, Hang, ScriptedUpstream
from tests.test_serve_workers import KEY, serve, wait_for_workers, write_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

KB = Path(__file__).parent / "data" / "kb"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) chorus[\w.]*: ")


def test_every_worker_logs_with_time_level_and_name(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    port = free_port()
    config = write_config(tmp_path, upstream, f'[[datasets]]\nid = "handbook"\nworkspace = "w"\nsources = ["{KB}/*.md"]\n')
    process = serve(config, port, tmp_path / "data")
    try:
        wait_for_workers(process, port)
        body = {"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        upstream.push(Error(500, "boom", type="server_error"))
        failed = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {KEY}"}, timeout=30)
        assert failed.status_code == 502
        upstream.push(Hang(600))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # a client that leaves
            raw = httpx.Request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json={**body, "stream": True},
                                headers={"authorization": f"Bearer {KEY}", "host": "chorus"})
            head = "".join(f"{k}: {v}\r\n" for k, v in raw.headers.items())
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\n{head}\r\n".encode() + raw.read())
            for _ in range(1500):  # hang guard: the upstream has the request within a moment
                if len(upstream.requests) == 2:
                    break
                time.sleep(0.02)
        assert upstream.wait_for_disconnect(30)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        upstream.reset()
    chorus_lines = [line for line in output.splitlines() if " chorus" in line or "chorus." in line]
    sync = [line for line in chorus_lines if "dataset handbook:" in line]
    assert sync and LINE.match(sync[0]), output
    upstream_failure = [line for line in chorus_lines if failed.headers["x-request-id"] in line]
    assert len(upstream_failure) == 1 and LINE.match(upstream_failure[0]), output
    assert " WARNING " in upstream_failure[0]
    gone = [line for line in chorus_lines if "disconnected" in line]
    assert gone and LINE.match(gone[0]) and " INFO " in gone[0], output
    bare = [line for line in output.splitlines() if line.startswith(("request ", "dataset "))]
    assert not bare, bare
