"""``POST /v1/files`` streams uploads to disk with the cap enforced while reading (issue #11, defect 2).

The server runs as ``chorus serve`` in a subprocess so its memory can be read from ``/proc``: the
peak resident set (``VmHWM``) after a chunked upload of 64 MiB against a 1 MiB cap stays within a
few MiB of what it was before, where buffering the body took the whole 64 MiB (and more).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chorus.runtime.keys import digest
from chorus.testing.server import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")

KEY = "sk-upload-test"
CAP = 1024 * 1024
SENT = 64 * 1024 * 1024  # what the client offers at most: 64 times the cap
GROWTH = 24 * 1024 * 1024  # what the server's peak memory may grow by (buffering would take > SENT)


def peak_rss(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """``(url, port, pid)`` of a single-process ``chorus serve`` with ``knowledge.max_file_bytes = CAP``."""
    tmp = tmp_path_factory.mktemp("upload")
    config = tmp / "chorus.toml"
    config.write_text(
        '[[providers]]\nid = "up"\ndriver = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n'
        f'[[workspaces]]\nid = "w"\napi_keys = ["{digest(KEY)}"]\n[knowledge]\nmax_file_bytes = {CAP}\n'
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chorus.cli", "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, "CHORUS_DATA_DIR": str(tmp / "data")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "chorus serve did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", port, process.pid
    finally:
        process.terminate()
        process.wait(30)


def chunked_upload(port: int, total: int, boundary: str = "chorus-test-boundary") -> bytes:
    """Send a chunked multipart upload of a ``total``-byte file, 64 KiB a chunk, until the server answers;
    the answer's raw bytes."""
    head = (f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.txt"\r\n'
            "content-type: text/plain\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nhost: chorus\r\ntransfer-encoding: chunked\r\n"
                     + f"authorization: Bearer {KEY}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())

        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        try:
            sock.sendall(chunk(head))
            sent = 0
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered before the end: stop sending
                data = piece[: min(len(piece), total - sent)]
                sock.sendall(chunk(data))
                sent += len(data)
            else:
                sock.sendall(chunk(tail) + b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading after its answer
        answer = b""
        while not complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response head and its ``content-length`` of body."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def test_a_chunked_upload_over_the_cap_is_413_in_flat_memory(server: tuple[str, int, int]) -> None:
    url, port, pid = server
    warm = chunked_upload(port, 1000)  # a small one first: every code path of an upload is loaded
    assert warm.startswith(b"HTTP/1.1 200"), warm[:200]
    before = peak_rss(pid)
    answer = chunked_upload(port, SENT)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"file_too_large" in answer
    growth = peak_rss(pid) - before
    assert growth < GROWTH, f"the server's peak memory grew by {growth // 1024 // 1024} MiB for a refused upload"
    assert httpx.get(url + "/health").status_code == 200


def test_a_chunked_upload_at_the_cap_is_stored_whole(server: tuple[str, int, int]) -> None:
    url, port, _ = server
    answer = chunked_upload(port, CAP)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    files = httpx.get(url + "/v1/files", headers={"authorization": f"Bearer {KEY}"}).json()["data"]
    assert CAP in [f["bytes"] for f in files]


def test_an_announced_length_over_the_cap_is_413_before_reading(server: tuple[str, int, int]) -> None:
    url, _, _ = server
    response = httpx.post(url + "/v1/files", headers={"authorization": f"Bearer {KEY}"},
                          files={"file": ("big.txt", b"x" * (CAP + 100 * 1024))}, data={"purpose": "assistants"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
