"""Serve an ASGI app on a real loopback port in a background thread, for end-to-end tests.

:class:`LiveServer` runs any ASGI app (a Chorus app from :func:`chorus.testing.gateway.make_app`,
or a small fake API a tool talks to) with uvicorn on ``127.0.0.1:<free port>``, lifespan
included, so the app starts its providers, skillsets and stores as in production::

    from chorus.testing.gateway import make_app

    with LiveServer(make_app(config)) as server, server.openai_client(ACME_KEY) as client:
        client.models.list()

:func:`free_port` gives a loopback port nothing listens on (for a "dead" upstream, or a
server started by a subprocess). This module depends on the standard library and uvicorn only.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    import openai

__all__ = ["LiveServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """Serve ``app`` with uvicorn on ``127.0.0.1:<free port>`` between :meth:`start` and :meth:`stop`.

    The port is bound at construction, so :attr:`url` is known before the server starts. Use it as
    a context manager (entering a server that is already started just returns it); :meth:`stop` may
    be called more than once. One server serves once: make a new one to serve again.
    """

    def __init__(self, app: Any, *, start_timeout: float = 15.0) -> None:
        self.app = app
        self.start_timeout = start_timeout
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        #: ``http://127.0.0.1:<port>``, no trailing slash.
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"live-server:{self.port}", daemon=True
        )
        self._stopped = False

    @property
    def base_url(self) -> str:
        """The OpenAI-style API root, ``<url>/v1`` (what an SDK's ``base_url`` wants)."""
        return self.url + "/v1"

    @property
    def started(self) -> bool:
        """True once uvicorn serves (the app's startup has run) and until :meth:`stop`."""
        return bool(self._server.started) and not self._stopped

    def start(self) -> LiveServer:
        """Start serving; returns once the app's startup has finished (raises if it failed)."""
        if self._stopped:
            raise RuntimeError("this LiveServer was stopped; make a new one to serve again")
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("live server failed to start (see the app's startup error logged above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut down (the app's shutdown runs) and release the port; a no-op the second time."""
        if self._stopped:
            return
        self._stopped = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def openai_client(self, api_key: str, *, timeout: float = 30.0, max_retries: int = 0,
                      **options: Any) -> openai.OpenAI:
        """The official ``openai`` SDK pointed at this server (needs the ``openai`` package).

        No retries by default, so a test sees the first answer. Close it, or use it as a
        context manager.
        """
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                             **options)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
