"""Prove that a driver's blocking work runs off the event loop, without timing anything.

A driver that calls a blocking library (SQLite, an embedded database, a model) must run it on a
worker thread, or every request served by the same process stalls behind it. Measuring the
loop's stalls makes a flaky test; this checks the contract directly instead. Wrap the blocking
callables with :meth:`OffLoop.wrap`; each call then fails unless

* it runs on a thread other than the event loop's, and
* the event loop runs a callback while the call is in progress (so the loop is not blocked
  waiting for the call some other way, e.g. on a lock the call holds).

::

    probe = OffLoop()  # in the test's coroutine: it probes the running loop
    monkeypatch.setattr(store, "replace_file_sync", probe.wrap(store.replace_file_sync))
    await store.replace_file(...)
    assert probe.calls == 1 and not probe.failures

Failures are raised in the calling thread (so the driver sees an error) and also kept in
:attr:`OffLoop.failures`, because a driver may turn exceptions into results.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class OffLoop:
    """Wraps blocking callables so each call checks that it runs off the event loop while the loop runs.

    Create it inside the test's coroutine: it probes the loop running there. ``timeout`` bounds how
    long a call waits for the loop to run its callback: it is a guard against a deadlock, not a
    performance bound, so keep it generous.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.calls = 0
        self.failures: list[str] = []
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[P, T]) -> Callable[P, T]:
        name = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn)
        def checked(*args: P.args, **kwargs: P.kwargs) -> T:
            with self._lock:
                self.calls += 1
            self._check(name)
            return fn(*args, **kwargs)

        return checked

    def _check(self, name: str) -> None:
        if threading.get_ident() == self._loop_thread:
            self._fail(f"{name} ran on the event loop's thread")
        ran = threading.Event()
        try:
            self.loop.call_soon_threadsafe(ran.set)
        except RuntimeError:  # the loop is closed
            self._fail(f"{name} ran after the event loop closed")
        if not ran.wait(self.timeout):
            self._fail(f"the event loop did not run while {name} was in progress")

    def _fail(self, message: str) -> None:
        with self._lock:
            self.failures.append(message)
        raise AssertionError(message)

