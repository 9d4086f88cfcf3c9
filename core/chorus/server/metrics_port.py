"""``[metrics] port``: ``/metrics`` on a port of its own, served by a small threaded HTTP server.

A single process serves its own metrics from a daemon thread (started and stopped with the app).
With ``chorus serve --workers N`` the supervisor serves this port instead, summing every worker's
samples (multiprocess mode), and the workers leave it alone (:data:`SUPERVISED_ENV`). The main port
then answers ``/metrics`` with 404.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self._answer(404, b"not found\n", "text/plain")
                elif not authorized(token, self.headers.get("authorization")):
                    self._answer(401, b"the metrics bearer token is required\n", "text/plain")
                else:
                    body, content_type = render()
                    self._answer(200, body, content_type)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="chorus-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
