"""One observation per request: the facts metrics, the JSON log line and the trace are made of.

The HTTP edge creates an :class:`Observation` when a request arrives; the edge, the runtime and
plugins fill it in while the request runs (``ctx.observation``); when the request ends the runtime's
observer (:mod:`chorus.runtime.observe`) turns it into Prometheus samples, one JSON log line
(``--log-format json``) and the attributes of the request's server span. Adding a fact is one
field here plus the lines that read it there.

Fields other parts of Chorus fill in:

* limits and budgets set :attr:`Observation.key_id`, :attr:`Observation.rejection` (``"rate_limit"``
  or ``"budget"``) and :attr:`Observation.cost` (USD, when the model has prices);
* retries and fallbacks add to :attr:`Observation.retries` / :attr:`Observation.fallbacks`, and a
  breaker that opens adds to :attr:`Observation.circuit_opens`;
* tools and retrieval add their counts and seconds (the built-in plugins do).

Team members run with their lead's observation (the teams plugin passes it on), so counts,
seconds and tokens cover the whole request. The runtime records the target and upstream time of
the client's request only (``ctx.depth == 0``).

Tracing is off unless configured: :attr:`Observation.trace` is then ``None`` and :meth:`span`
returns one shared no-op context manager, so instrumented code costs an attribute read.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

_NOOP: AbstractContextManager[None] = nullcontext()


class Tracer(Protocol):
    """What instrumented code needs of tracing (the runtime implements it on OpenTelemetry)."""

    @property
    def record_content(self) -> bool:
        """Whether message content may be recorded (``[tracing] record_content``)."""
        ...

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child span of the current one, current while the ``with`` block runs.

        The block's exception (if any) marks the span as an error; the value is the span (with
        ``set_attribute``).
        """
        ...

    def failed(self, span: Any, error_type: str) -> None:
        """Mark ``span`` (from :meth:`span`) as failed with ``error.type`` ``error_type``."""
        ...


class Observation:
    """The facts of one request. Create one per request; every field has a cheap default."""

    __slots__ = (
        "bot_id",
        "circuit_opens",
        "context_seconds",
        "cost",
        "error",
        "fallbacks",
        "first_event",
        "input_tokens",
        "key_id",
        "model",
        "output_tokens",
        "provider",
        "rejection",
        "request_id",
        "response_model",
        "retries",
        "retrieval_seconds",
        "route",
        "search_seconds",
        "selector",
        "started",
        "status",
        "stream",
        "target_kind",
        "tool_calls",
        "tool_errors",
        "tool_seconds",
        "trace",
        "upstream_calls",
        "upstream_seconds",
        "workspace",
    )

    def __init__(self, route: str, started: float, trace: Tracer | None = None) -> None:
        self.route = route                  # "chat", ...: the route's name (a metric label)
        self.started = started              # time.perf_counter() when the request arrived
        self.trace = trace                  # None: tracing is off
        self.request_id = ""
        self.workspace: str | None = None
        self.key_id: str | None = None      # the API key's id, when keys have ids (managed keys)
        self.selector: str | None = None    # the client's `model`
        self.target_kind = ""               # "model" or "bot" once resolved
        self.bot_id: str | None = None
        self.provider = ""                  # provider id of the target
        self.model: str | None = None       # upstream model requested
        self.response_model: str | None = None  # upstream model that answered (its `model` field)
        self.stream = False
        self.status = 200                   # HTTP status sent (499: the client left)
        self.error: str | None = None       # error code (also for a stream that failed after its start)
        self.rejection: str | None = None   # "rate_limit" | "budget": refused before any upstream call
        self.first_event: float | None = None  # perf_counter() when the first SSE event was sent
        self.upstream_seconds = 0.0         # time in model calls of the client's request (not members')
        self.upstream_calls = 0             # model calls made, hidden steps and team members included
        self.context_seconds = 0.0          # time preparing context (retrieval, search) of the client's request
        self.tool_seconds = 0.0             # time in server tool rounds of the client's request (members run there)
        self.retrieval_seconds: float | None = None  # dataset retrieval, summed (None: none ran)
        self.search_seconds: float | None = None     # web search, summed (None: none ran)
        self.tool_calls = 0                 # server tool calls, members' included
        self.tool_errors = 0                # of which ended in an error result
        self.input_tokens = 0               # summed over every model call, hidden steps and members included
        self.output_tokens = 0
        self.cost: float | None = None      # USD, when the prices are known
        self.retries = 0
        self.fallbacks = 0
        self.circuit_opens = 0

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child span of the current span (tracing on), or a shared no-op (tracing off).

        Build costly ``attributes`` only when :attr:`trace` is not ``None``.
        """
        trace = self.trace
        if trace is None:
            return _NOOP
        return trace.span(name, attributes)

    def add_retrieval(self, seconds: float) -> None:
        self.retrieval_seconds = (self.retrieval_seconds or 0.0) + seconds

    def add_search(self, seconds: float) -> None:
        self.search_seconds = (self.search_seconds or 0.0) + seconds
