"""A standard-library HTTP server answering from a daemon thread: the metrics port and test sinks.

:class:`BackgroundHTTPServer` binds at construction (so :attr:`port` is known, ``0`` picks a free
one), serves on its own thread between :meth:`start` and :meth:`stop`, and handles each request on
a daemon thread of its own (``ThreadingHTTPServer``). Not for the API: that is the ASGI server's.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["BackgroundHTTPServer", "QuietHandler"]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log line per request, and answers in one call."""

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        """Send ``status`` with ``body`` (``content-type`` and ``content-length`` set)."""
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class BackgroundHTTPServer:
    """``handler`` on ``host:port`` from a daemon thread named ``name``, until :meth:`stop`."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], *, name: str) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        #: The bound port (the one picked when ``port`` was 0).
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        """Start serving (once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if started) and close the socket; safe to call once started or not."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
