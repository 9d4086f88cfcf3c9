"""A stand-in OpenTelemetry collector: accepts OTLP/HTTP exports on loopback and counts them.

``OtlpCollector`` answers every ``POST`` (``/v1/traces`` and the like) with ``200`` and an empty
protobuf body, as a collector does, and records each export's path, content type and size. Point
``OTEL_EXPORTER_OTLP_ENDPOINT`` at :attr:`OtlpCollector.endpoint` to trace into it (tests, the
tracing benchmark). Standard library only.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["OtlpCollector"]


class OtlpCollector:
    """An OTLP/HTTP sink on ``127.0.0.1:<free port>`` between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.exports: list[tuple[str, str, int]] = []  # (path, content type, body bytes)
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with collector._lock:
                    collector.exports.append((self.path, self.headers.get("content-type", ""), len(body)))
                    collector.bodies.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        #: What ``OTEL_EXPORTER_OTLP_ENDPOINT`` should be (the exporter appends ``/v1/traces``).
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-collector", daemon=True)

    def start(self) -> OtlpCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
