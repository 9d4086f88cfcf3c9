"""A stand-in OpenTelemetry collector: accepts OTLP/HTTP exports on loopback and counts them.

``OtlpCollector`` answers every ``POST`` (``/v1/traces`` and the like) with ``200`` and an empty
protobuf body, as a collector does, and records each export's path, content type and size. Point
``OTEL_EXPORTER_OTLP_ENDPOINT`` at :attr:`OtlpCollector.endpoint` to trace into it (tests, the
tracing benchmark). Needs nothing beyond the standard library (its server is :mod:`chorus.net.background_http`).
"""

from __future__ import annotations

import threading

from chorus.net.background_http import BackgroundHTTPServer, QuietHandler

__all__ = ["OtlpCollector"]


class OtlpCollector:
    """An OTLP/HTTP sink on ``127.0.0.1:<free port>`` between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.exports: list[tuple[str, str, int]] = []  # (path, content type, body bytes)
        self.bodies: list[bytes] = []
        collector = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with collector._lock:
                    collector.exports.append((self.path, self.headers.get("content-type", ""), len(body)))
                    collector.bodies.append(body)
                self.answer(200, b"", "application/x-protobuf")

        self._lock = threading.Lock()
        self._server = BackgroundHTTPServer("127.0.0.1", 0, Handler, name="otlp-collector")
        #: What ``OTEL_EXPORTER_OTLP_ENDPOINT`` should be (the exporter appends ``/v1/traces``).
        self.endpoint = f"http://127.0.0.1:{self._server.port}"

    def start(self) -> OtlpCollector:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> OtlpCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
