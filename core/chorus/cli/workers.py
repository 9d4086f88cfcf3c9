"""``chorus serve --workers N``: worker processes that each accept on a ``SO_REUSEPORT`` socket.

uvicorn's own ``workers=N`` shares one listening socket among the workers; whichever worker wakes
first accepts every connection waiting, so a client that opens its keep-alive connections together
(an SDK's pool, a load balancer, a benchmark) can land on one worker while the others idle
(measured: 32 of 32 connections on one of two workers). Here each worker binds a socket of its own
with ``SO_REUSEPORT`` and the kernel spreads new connections across them by a hash of their
addresses. Linux only; elsewhere ``chorus serve`` keeps uvicorn's shared socket.

The supervisor starts the workers (``spawn``: each builds its own app through
``chorus.cli.main:app_factory``), restarts one that dies, gives up when workers keep dying right after
they start (a crash loop), and on ``SIGINT``/``SIGTERM`` stops them all (``SIGTERM``, then
``SIGKILL`` after ``grace`` seconds).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("chorus.workers")

CRASH_WINDOW = 10.0  # a worker that exits sooner than this after starting counts towards a crash loop


def reuse_port_available() -> bool:
    """Whether the kernel balances connections across ``SO_REUSEPORT`` listeners (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (not yet listening)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(host: str, port: int, options: dict[str, Any]) -> None:  # pragma: no cover - runs in the child
    import uvicorn

    sock = bind_reuse_port(host, port)
    config = uvicorn.Config("chorus.cli.main:app_factory", factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


def _forget_metrics_of(pid: int | None) -> None:
    """A dead worker's live gauges (``chorus_circuit_open``) stop counting (multiprocess metrics)."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(host: str, port: int, workers: int, options: dict[str, Any], grace: float = 30.0) -> int:
    """Run ``workers`` processes until a signal; returns the exit status (1 after a crash loop)."""
    try:  # fail at once, with the reason, when another program holds the port
        bind_reuse_port(host, port).close()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        return 1
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_worker, args=(host, port, options), name="chorus-worker")
        process.start()
        return process, time.monotonic()

    running = [start() for _ in range(workers)]
    early_exits = 0
    status = 0
    try:
        while not stopping:
            wait([process.sentinel for process, _ in running], timeout=0.5)
            for i, (process, started) in enumerate(running):
                if process.is_alive() or stopping:
                    continue
                if time.monotonic() - started < CRASH_WINDOW:
                    early_exits += 1
                if early_exits > 2 * workers:
                    log.error("workers keep exiting right after they start (last exit code %s); stopping", process.exitcode)
                    stopping, status = True, 1
                    break
                log.warning("worker %s exited with code %s; starting a new one", process.pid, process.exitcode)
                _forget_metrics_of(process.pid)
                running[i] = start()
    finally:
        for process, _ in running:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace
        for process, _ in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
