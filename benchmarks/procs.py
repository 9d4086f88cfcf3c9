"""Server processes and what is read about them: ``Proc`` (own session, pinned with taskset,
logged to a file, stopped on exit), process trees, CPU seconds and RSS from /proc, /proc/stat,
free ports, a one-shot HTTP request, and waiting for a server to answer."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from constants import HOST, REPO


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM the child if this script dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Proc:
    """A server process in its own session, pinned with taskset, logged to a file."""

    live: ClassVar[list[Proc]] = []  # started and not yet stopped: what stop_all() ends

    def __init__(self, name: str, argv: list[str], cores: str | None, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.cores = cores
        self.log_path = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        argv = list(self.argv)
        if self.cores is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", self.cores, *argv]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 -- the child writes to it until stop() closes it
        self.log.write(f"$ {' '.join(argv)}\n".encode())
        self.log.flush()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
            cwd=str(REPO),
        )
        if self.cores is not None and not shutil.which("taskset"):
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(self.popen.pid, {int(c) for c in self.cores.split(",")})
        Proc.live.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        """TERM the process group, KILL it after 8 s; close the log."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        else:  # the leader is gone; children of its session may remain
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def tail(self, n: int = 15) -> str:
        """The last ``n`` lines of the log, for error messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- /proc accounting (psutil when installed) ------------------------------------------------

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def rss_bytes(self) -> int:
        return sum(status_kb(pid, "VmRSS") for pid in self.tree()) * 1024

    def peak_rss_bytes(self) -> int:
        """Sum of VmHWM (peak resident set) over the process tree; exact for one process."""
        return sum(status_kb(pid, "VmHWM") for pid in self.tree()) * 1024


def stop_all() -> None:
    """Stop every started process, the last started first."""
    for proc in reversed(list(Proc.live)):
        with contextlib.suppress(Exception):
            proc.stop()


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, read from /proc (``taskset`` execs, so ``root`` is the server)."""
    try:
        import psutil  # type: ignore[import-not-found]

        p = psutil.Process(root)
        return [root] + [c.pid for c in p.children(recursive=True)]
    except Exception:
        pass
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (children that exited are not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """One field of /proc/<pid>/status in kB (``VmRSS``, ``VmHWM``); 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_times() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return []


def free_port() -> int:
    """A loopback port that is free now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_request(method: str, port: int, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a fresh connection: the status and the whole body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, timeout: float) -> None:
    """Poll ``GET path`` until it answers 200; raise with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during startup:\n{proc.tail()}")
        try:
            status, _ = http_request("GET", port, path, timeout=2)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready after {timeout:.0f} s ({last}):\n{proc.tail()}")
