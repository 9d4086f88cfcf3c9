"""The observer: each request's :class:`~chorus.contract.observe.Observation` turned into Prometheus
samples, one JSON log line and its server span's attributes, once, when the request ends.

Metrics use ``prometheus_client``. Label children are bound once per label combination and kept
(:class:`_Bound`), so a request costs a dictionary lookup and a few increments. With
``chorus serve --workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` (a directory in the data
dir, emptied at start) before any worker starts: each worker writes its samples to memory-mapped
files there and ``/metrics``, answered by any worker (or the supervisor's metrics port), sums
them. A single process keeps its samples in memory.

The names and meanings of every metric are in ``docs/observability.md``; a test checks that every
metric the Grafana dashboard (``docs/grafana-dashboard.json``) queries is exported.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from chorus.contract.config import Config
from chorus.contract.observe import Observation

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from chorus.runtime.tracing import OtelTracing

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_LOGGER = "chorus.request"
request_log = logging.getLogger(REQUEST_LOGGER)

# Buckets (seconds). The gateway's own time is sub-millisecond when healthy; upstream calls and
# whole requests take up to minutes.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Every metric Chorus exports: name (as exposed, counters with ``_total``) -> help text.
METRICS: dict[str, str] = {
    "chorus_requests_total": "Requests answered, by route, target kind (model, bot), provider and HTTP status",
    "chorus_request_errors_total": "Requests that ended in an error, by route and error code (streams failing mid-way included)",
    "chorus_request_duration_seconds": "Whole request time at the gateway (to the last byte of a stream)",
    "chorus_gateway_overhead_seconds": "Request time minus the time spent waiting on model calls, server tools and retrieval",
    "chorus_upstream_duration_seconds": "Time in model calls of one request (hidden steps summed; a stream until its last chunk)",
    "chorus_upstream_calls_total": "Model calls made, hidden tool steps and team members included",
    "chorus_time_to_first_token_seconds": "Streams: time from the request's arrival to its first event sent",
    "chorus_tokens_total": "Tokens reported by upstreams (direction input or output), hidden steps and team members included",
    "chorus_cost_usd_total": "Cost of requests whose model has prices, in US dollars",
    "chorus_tool_calls_total": "Server-side tool calls (team members asked included)",
    "chorus_tool_errors_total": "Server-side tool calls whose result is an error",
    "chorus_retrieval_duration_seconds": "Dataset retrieval time per request",
    "chorus_search_duration_seconds": "Web search time per request",
    "chorus_retries_total": "Upstream calls retried",
    "chorus_fallbacks_total": "Requests answered by a fallback provider",
    "chorus_circuit_opens_total": "Times a provider's circuit breaker opened",
    "chorus_circuit_open": "1 while a provider's circuit breaker is open",
    "chorus_rejections_total": "Requests refused by a limit, by reason (rate_limit, budget)",
}


class _Bound:
    """The label children one (route, kind, provider, status) combination updates."""

    __slots__ = ("calls", "cost", "duration", "fallbacks", "input", "output", "overhead", "requests", "retries",
                 "tool_calls", "tool_errors", "ttft", "upstream")

    def __init__(self, m: Metrics, route: str, kind: str, provider: str, status: int) -> None:
        self.requests = m.requests.labels(route, kind, provider, str(status))
        self.duration = m.duration.labels(route, kind)
        self.overhead = m.overhead.labels(route, kind)
        self.upstream = m.upstream.labels(provider)
        self.calls = m.upstream_calls.labels(provider)
        self.ttft = m.ttft.labels(kind, provider)
        self.input = m.tokens.labels("input", kind, provider)
        self.output = m.tokens.labels("output", kind, provider)
        self.cost = m.cost.labels(kind, provider)
        self.tool_calls = m.tool_calls.labels(kind)
        self.tool_errors = m.tool_errors.labels(kind)
        self.retries = m.retries.labels(provider)
        self.fallbacks = m.fallbacks.labels(provider)


class Metrics:
    """Chorus's Prometheus metrics in one registry (per app; per process files with workers)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = registry = CollectorRegistry(auto_describe=True)
        h = METRICS

        def counter(name: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name.removesuffix("_total"), h[name], labels, registry=registry)

        def histogram(name: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, h[name], labels, buckets=buckets, registry=registry)

        self.requests = counter("chorus_requests_total", ("route", "target_kind", "provider", "status"))
        self.errors = counter("chorus_request_errors_total", ("route", "code"))
        self.duration = histogram("chorus_request_duration_seconds", ("route", "target_kind"), LATENCY_BUCKETS)
        self.overhead = histogram("chorus_gateway_overhead_seconds", ("route", "target_kind"), OVERHEAD_BUCKETS)
        self.upstream = histogram("chorus_upstream_duration_seconds", ("provider",), LATENCY_BUCKETS)
        self.upstream_calls = counter("chorus_upstream_calls_total", ("provider",))
        self.ttft = histogram("chorus_time_to_first_token_seconds", ("target_kind", "provider"), TTFT_BUCKETS)
        self.tokens = counter("chorus_tokens_total", ("direction", "target_kind", "provider"))
        self.cost = counter("chorus_cost_usd_total", ("target_kind", "provider"))
        self.tool_calls = counter("chorus_tool_calls_total", ("target_kind",))
        self.tool_errors = counter("chorus_tool_errors_total", ("target_kind",))
        self.retrieval = histogram("chorus_retrieval_duration_seconds", (), LOOKUP_BUCKETS)
        self.search = histogram("chorus_search_duration_seconds", (), LOOKUP_BUCKETS)
        self.retries = counter("chorus_retries_total", ("provider",))
        self.fallbacks = counter("chorus_fallbacks_total", ("provider",))
        self.circuit_opens = counter("chorus_circuit_opens_total", ("provider",))
        self.circuit_open = Gauge("chorus_circuit_open", h["chorus_circuit_open"], ("provider",), registry=registry,
                                  multiprocess_mode="livemax")
        self.rejections = counter("chorus_rejections_total", ("reason",))
        self._bound: dict[tuple[str, str, str, int], _Bound] = {}

    def record(self, o: Observation, total: float) -> None:
        """Add one finished request's samples."""
        key = (o.route, o.target_kind, o.provider, o.status)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = _Bound(self, *key)
        bound.requests.inc()
        bound.duration.observe(total)
        bound.overhead.observe(max(0.0, total - o.upstream_seconds - o.tool_seconds - o.context_seconds))
        if o.upstream_calls:
            bound.calls.inc(o.upstream_calls)
            bound.upstream.observe(o.upstream_seconds)
        if o.first_event is not None:
            bound.ttft.observe(o.first_event - o.started)
        if o.input_tokens:
            bound.input.inc(o.input_tokens)
        if o.output_tokens:
            bound.output.inc(o.output_tokens)
        if o.cost:
            bound.cost.inc(o.cost)
        if o.tool_calls:
            bound.tool_calls.inc(o.tool_calls)
            if o.tool_errors:
                bound.tool_errors.inc(o.tool_errors)
        if o.retrieval_seconds is not None:
            self.retrieval.observe(o.retrieval_seconds)
        if o.search_seconds is not None:
            self.search.observe(o.search_seconds)
        if o.error is not None:
            self.errors.labels(o.route, o.error).inc()
        if o.rejection is not None:
            self.rejections.labels(o.rejection).inc()
        if o.retries:
            bound.retries.inc(o.retries)
        if o.fallbacks:
            bound.fallbacks.inc(o.fallbacks)
        if o.circuit_opens:
            self.circuit_opens.labels(o.provider).inc(o.circuit_opens)

    def render(self) -> tuple[bytes, str]:
        """The exposition (every worker's samples summed in multiprocess mode) and its content type."""
        return render(self.registry if not self.multiprocess else None)


def render(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """Prometheus text of ``registry``, or of every process of ``$PROMETHEUS_MULTIPROC_DIR`` (``None``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if registry is None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class Observer:
    """What a server does with its requests' observations: metrics, the JSON log line, traces.

    Built once per app from the configuration (:meth:`from_config`). Other parts of Chorus report
    events that are not one request's through :meth:`circuit_changed`.
    """

    def __init__(self, *, metrics: bool = True, log_requests: bool = False, tracing: OtelTracing | None = None) -> None:
        self.metrics = Metrics() if metrics else None
        #: Each provider's circuit state (``"closed"``, ``"open"``, ``"half_open"``), read when metrics
        #: are scraped to set ``chorus_circuit_open`` (``Services`` connects the failover's).
        self.circuit_states: Callable[[], dict[str, str]] | None = None
        self.log_requests = log_requests
        self.tracing = tracing

    @classmethod
    def from_config(cls, config: Config, *, tracer_provider: Any = None, environ: Mapping[str, str] | None = None) -> Observer:
        """Metrics per ``[metrics]``, request lines with ``log_format = "json"``, tracing when the
        ``OTEL_*`` environment asks for it (or a ``tracer_provider`` is given, as tests do)."""
        from chorus.runtime import tracing

        provider = tracer_provider if tracer_provider is not None else tracing.provider_from_env(environ or os.environ)
        otel = tracing.OtelTracing(provider, config.tracing.record_content) if provider is not None else None
        return cls(metrics=config.metrics.enabled, log_requests=config.server.log_format == "json", tracing=otel)

    def start(self, route: str) -> Observation:
        """A new request's observation (its clock starts now)."""
        return Observation(route, time.perf_counter(), self.tracing)

    def finish(self, o: Observation) -> None:
        """The request is over: record it everywhere, once. Never raises."""
        total = time.perf_counter() - o.started
        try:
            if self.metrics is not None:
                self.metrics.record(o, total)
            if self.log_requests:
                request_log.info("request", extra={"chorus": log_fields(o, total)})
        except Exception:  # observing must never fail a request
            logging.getLogger("chorus").exception("request %s: recording its metrics failed", o.request_id)

    def render(self) -> tuple[bytes, str]:
        """The metrics exposition, with the circuit gauge refreshed first (this process's breakers)."""
        assert self.metrics is not None
        if self.circuit_states is not None:
            for provider, state in self.circuit_states().items():
                self.circuit_changed(provider, state == "open")
        return self.metrics.render()

    def circuit_changed(self, provider: str, is_open: bool) -> None:
        """A provider's circuit breaker opened (``True``) or closed: the ``chorus_circuit_open`` gauge.

        The opening itself is counted per request (``Observation.circuit_opens``).
        """
        if self.metrics is not None:
            self.metrics.circuit_open.labels(provider).set(1 if is_open else 0)

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def log_fields(o: Observation, total: float) -> dict[str, Any]:
    """The request's JSON log fields: identifiers, target, status, latencies, tokens, cost; no content, no key."""
    fields: dict[str, Any] = {
        "request_id": o.request_id, "route": o.route, "workspace": o.workspace, "key_id": o.key_id,
        "model": o.selector, "target_kind": o.target_kind or None, "bot": o.bot_id, "provider": o.provider or None,
        "upstream_model": o.model, "stream": o.stream, "status": o.status, "error": o.error,
        "duration_ms": _ms(total),
        "overhead_ms": _ms(max(0.0, total - o.upstream_seconds - o.tool_seconds - o.context_seconds)),
        "upstream_ms": _ms(o.upstream_seconds) if o.upstream_calls else None,
        "ttft_ms": _ms(o.first_event - o.started) if o.first_event is not None else None,
        "upstream_calls": o.upstream_calls,
        "input_tokens": o.input_tokens, "output_tokens": o.output_tokens, "cost_usd": o.cost,
        "tool_calls": o.tool_calls, "tool_errors": o.tool_errors,
        "retrieval_ms": _ms(o.retrieval_seconds), "search_ms": _ms(o.search_seconds),
    }
    for name in ("rejection", "retries", "fallbacks", "circuit_opens"):
        value = getattr(o, name)
        if value:
            fields[name] = value
    return fields


_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
    request fields of a request line, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "chorus", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return _encode(entry).decode()
