"""``chorus serve --log-format json``: one JSON object per line, one line per request, in every
worker, never a key or message content."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from chorus.testing.server import free_port
from chorus.testing.upstream import Error, Reply, ScriptedUpstream
from tests.test_serve_workers import KEY, wait_for_workers, write_config

PROMPT = "my secret recipe is canary-5f3a9"
ANSWER = "answer-canary-77c1"


def start(config: Path, port: int, data: Path, *extra: str) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(config), "--port", str(port), *extra],
        env={**os.environ, "CHORUS_DATA_DIR": str(data)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_healthy(process: subprocess.Popen[str], port: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "chorus serve did not start"
        time.sleep(0.2)


def exercise(port: int, upstream: ScriptedUpstream, requests: int) -> None:
    """``requests`` answered chat requests (a fresh connection each), one streamed, then one failing upstream call."""
    upstream.push(*[Reply(ANSWER, usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
                    for _ in range(requests)], Error(500, "upstream trouble"))
    for i in range(requests):
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
            if i == 0:
                chunks = sdk.chat.completions.create(model="model/name=up/gpt-test", stream=True,
                                                     messages=[{"role": "user", "content": PROMPT}])
                assert ANSWER in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                sdk.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": PROMPT}])
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk, \
            pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": PROMPT}])


def stop(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    process.terminate()
    output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -15), output  # uvicorn re-raises the SIGTERM it handled
    assert KEY not in output and PROMPT not in output and ANSWER not in output and "canary" not in output
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))  # every JSON-looking line parses
    return lines


def check_request_lines(lines: list[dict[str, object]], answered: int) -> list[dict[str, object]]:
    requests = [line for line in lines if line.get("logger") == "chorus.request"]
    assert len(requests) == answered + 1, requests
    for line in requests:
        assert line["level"] == "INFO" and line["message"] == "request"
        assert str(line["request_id"]).startswith("req_")
        assert line["workspace"] == "w" and line["model"] == "model/name=up/gpt-test"
        assert line["target_kind"] == "model" and line["provider"] == "up" and line["upstream_model"] == "gpt-test"
        assert "key_id" in line and "cost_usd" in line
        assert isinstance(line["duration_ms"], float) and isinstance(line["overhead_ms"], float)
        assert isinstance(line["upstream_ms"], float)
    ok = [line for line in requests if line["status"] == 200]
    assert len(ok) == answered
    assert all(line["input_tokens"] == 7 and line["output_tokens"] == 2 for line in ok)
    assert sum(1 for line in ok if line["stream"] and isinstance(line["ttft_ms"], float)) == 1
    failed = [line for line in requests if line["status"] == 502]
    assert len(failed) == 1 and failed[0]["error"] == "upstream_error"
    return requests


def test_json_logs_one_line_per_request(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    port = free_port()
    process = start(write_config(tmp_path, upstream), port, tmp_path / "data", "--log-format", "json")
    try:
        wait_healthy(process, port)
        exercise(port, upstream, 3)
    finally:
        lines = stop(process)
        upstream.reset()
    check_request_lines(lines, 3)
    # every line is JSON: uvicorn's own and Chorus's warnings (the failed upstream call) too
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # type: ignore[union-attr]
    assert any(line["level"] == "WARNING" and line["logger"] == "chorus" for line in lines)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="chorus serve --workers uses SO_REUSEPORT (Linux)")
def test_every_worker_logs_json_set_in_the_configuration(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    port = free_port()
    config = write_config(tmp_path, upstream)
    config.write_text('[server]\nlog_format = "json"\n' + config.read_text())
    process = start(config, port, tmp_path / "data", "--workers", "2")
    try:
        workers = wait_for_workers(process, port)
        exercise(port, upstream, 8)
    finally:
        lines = stop(process)
        upstream.reset()
    check_request_lines(lines, 8)
    assert workers


def test_text_stays_the_default(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    port = free_port()
    process = start(write_config(tmp_path, upstream), port, tmp_path / "data")
    try:
        wait_healthy(process, port)
        exercise(port, upstream, 1)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        upstream.reset()
    assert not [line for line in output.splitlines() if line.startswith("{")]
    assert " WARNING chorus: request req_" in output  # the failed upstream call, as before
    assert KEY not in output and PROMPT not in output
