"""``[metrics] port``: ``/metrics`` on a port of its own, served by a small threaded HTTP server.

A single process serves its own metrics from a daemon thread (started and stopped with the app).
With ``chorus serve --workers N`` the supervisor serves this port instead, summing every worker's
samples (multiprocess mode), and the workers leave it alone (:data:`SUPERVISED_ENV`). The main port
then answers ``/metrics`` with 404.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from chorus.net.background_http import BackgroundHTTPServer, QuietHandler

SUPERVISED_ENV = "CHORUS_METRICS_SUPERVISED"  # set for workers: the supervisor serves the metrics port

Render = Callable[[], tuple[bytes, str]]


def authorized(expected: str | None, authorization: str | None) -> bool:
    """Whether ``authorization`` carries the metrics bearer token (always, when none is configured)."""
    if expected is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


class MetricsServer:
    """``GET /metrics`` (and ``/``) on ``host:port`` until :meth:`stop`; other paths are 404."""

    def __init__(self, host: str, port: int, render: Render, token: str | None = None) -> None:
        class Handler(QuietHandler):  # scrapes are not worth a log line
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.answer(404, b"not found\n", "text/plain")
                elif not authorized(token, self.headers.get("authorization")):
                    self.answer(401, b"the metrics bearer token is required\n", "text/plain")
                else:
                    body, content_type = render()
                    self.answer(200, body, content_type)

        self._server = BackgroundHTTPServer(host, port, Handler, name="chorus-metrics")
        self.port = self._server.port

    def start(self) -> MetricsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
