"""``chorus serve --workers N``: real worker processes behind one port, a lean supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from chorus.runtime.keys import digest
from chorus.testing.server import free_port
from chorus.testing.upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

KEY = "sk-workers-test"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kb(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def established_on(port: int) -> set[int]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(int(fields[9]))
    return inodes


def sockets_of(pid: int) -> set[int]:
    found = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def serve(config: Path, port: int, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        env={**os.environ, "CHORUS_DATA_DIR": str(data)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def write_config(tmp_path: Path, upstream: ScriptedUpstream, extra: str = "") -> Path:
    """``chorus.toml``: provider ``up`` on the scripted upstream, workspace ``w`` with ``KEY``, then ``extra``."""
    config = tmp_path / "chorus.toml"
    config.write_text(
        f'[[providers]]\nid = "up"\ndriver = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["gpt-test"]\n'
        'retries = 0\n'  # scripted faults reach the client as scripted
        f'[[workspaces]]\nid = "w"\napi_keys = ["{digest(KEY)}"]\n' + extra
    )
    return config


def wait_for_workers(process: subprocess.Popen[str], port: int, gone: list[int] | None = None) -> list[int]:
    """The two worker pids once both run (none of ``gone``) and the port answers."""
    deadline = time.monotonic() + 60
    while True:
        workers = [pid for pid in children(process.pid) if "spawn_main" in cmdline(pid)]
        try:
            if (len(workers) == 2 and not set(workers) & set(gone or ())
                    and httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200):
                return workers
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "chorus serve --workers 2 has not two workers"
        time.sleep(0.2)


def test_a_resume_reaches_hidden_steps_parked_by_a_worker_that_is_gone(tmp_path: Path,
                                                                        upstream: ScriptedUpstream) -> None:
    """Parked agent turns live in the data dir: any worker, even a replacement, restores them."""
    upstream.reset()
    port = free_port()
    config = write_config(
        tmp_path, upstream,
        '[[skillsets]]\nid = "maths"\nworkspace = "w"\n'
        '[[skillsets.tools]]\nname = "calc"\ndriver = "calculator"\n'
        '[[bots]]\nid = "agent"\nworkspace = "w"\nmodel = "up/gpt-test"\nskillsets = ["maths"]\n',
    )
    process = serve(config, port, tmp_path / "data")
    client_tool = {"type": "function", "function": {"name": "ask_user", "parameters": {"type": "object", "properties": {}}}}
    ask = [{"role": "user", "content": "what is 6*7, and ask me"}]
    try:
        workers = wait_for_workers(process, port)
        upstream.push(Reply(content=None, tool_calls=[
            {"id": "s1", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "6*7"}'}},
            {"id": "u1", "type": "function", "function": {"name": "ask_user", "arguments": "{}"}},
        ]))
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
            first = sdk.chat.completions.create(model="bot/id=agent", messages=ask, tools=[client_tool])  # type: ignore[arg-type,list-item]
        assert [c.id for c in first.choices[0].message.tool_calls or []] == ["u1"]
        for pid in workers:  # every process that could hold the turn in memory is gone
            os.kill(pid, 9)
        wait_for_workers(process, port, gone=workers)
        upstream.push(Reply(content="42, and thanks."))
        history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "u1", "type": "function", "function": {"name": "ask_user", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "u1", "content": "go on"}]
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
            second = sdk.chat.completions.create(model="bot/id=agent", messages=history, tools=[client_tool])  # type: ignore[arg-type,list-item]
        assert second.choices[0].message.content == "42, and thanks."
        sent = upstream.requests[-1].json["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
        assert [c["id"] for c in sent[1]["tool_calls"]] == ["s1", "u1"]
        assert sent[2] == {"role": "tool", "tool_call_id": "s1", "content": "{\"result\":42}"}
    finally:
        process.terminate()
        process.communicate(timeout=20)
        upstream.reset()


def test_two_workers_serve_and_stop(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    port = free_port()
    config = write_config(tmp_path, upstream)
    process = serve(config, port, tmp_path / "data")
    try:
        workers = wait_for_workers(process, port)
        upstream.push(*[Reply(content=f"answer {i}") for i in range(6)])
        answers = []
        for _ in range(6):  # a fresh connection each time, so the kernel may hand any worker the request
            with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
                completion = sdk.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
                answers.append(completion.choices[0].message.content)
        assert sorted(answers) == [f"answer {i}" for i in range(6)]
        # Keep-alive connections opened together are spread over the workers (SO_REUSEPORT), not
        # all accepted by whichever worker woke first.
        pool = [httpx.Client(base_url=f"http://127.0.0.1:{port}") for _ in range(16)]
        try:
            for http in pool:
                assert http.get("/health").status_code == 200
            established = established_on(port)
            per_worker = [len(sockets_of(pid) & established) for pid in workers]
        finally:
            for http in pool:
                http.close()
        assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker
        # The supervisor validated the configuration in a child that has exited; it holds no app.
        assert rss_kb(process.pid) < min(rss_kb(pid) for pid in workers) / 2
        # A worker that dies is replaced.
        os.kill(workers[0], 9)
        wait_for_workers(process, port, gone=workers[:1])
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        upstream.reset()
    assert process.returncode == 0
    assert all(not Path(f"/proc/{pid}").exists() or "spawn_main" not in cmdline(pid) for pid in workers)
    assert KEY not in output


def test_a_bad_configuration_stops_before_binding(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "chorus.toml"
    config.write_text('[[providers]]\nid = "up"\ndriver = "no-such-driver"\nmodels = ["m"]\n')
    process = serve(config, port, tmp_path / "data")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "chorus: error: invalid configuration" in output and "no-such-driver" in output
    assert "Traceback" not in output
