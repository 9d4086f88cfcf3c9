"""OpenTelemetry traces: one server span per request, children for retrieval, each upstream call,
each tool call and each team member, named and attributed after the GenAI semantic conventions.

Off unless the standard environment says where to export (:func:`provider_from_env`); then, and
only then, the OpenTelemetry SDK is imported (``pip install 'chorus-gateway[otel]'``). When off,
requests carry no tracer (``Observation.trace is None``) and create no span objects.

Trace context: an incoming ``traceparent``/``tracestate`` makes the server span a child of the
caller's span; every upstream call carries the ``traceparent`` of its own client span (through
``ctx.upstream_headers``, which provider drivers send). Message content is recorded only with
``[tracing] record_content = true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from chorus.contract.context import RequestContext, Target
from chorus.contract.errors import ChorusError, ConfigError
from chorus.contract.observe import Observation

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` environment asks for traces: ``OTEL_TRACES_EXPORTER`` names an exporter,
    or an OTLP endpoint is set; never with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters) or any(environ.get(name) for name in _ENDPOINT_VARS)


def provider_from_env(environ: Mapping[str, str]) -> Any:
    """An SDK ``TracerProvider`` exporting where the environment says, or ``None`` (tracing off).

    ``OTEL_TRACES_EXPORTER``: ``otlp`` (the default; OTLP over HTTP/protobuf, or gRPC with
    ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` when its exporter is installed) and/or ``console``. The
    exporters read their own settings (endpoint, headers, timeout) from the environment;
    ``OTEL_SERVICE_NAME`` defaults to ``chorus``.
    """
    if not enabled(environ):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        raise ConfigError("tracing: the OTEL_* environment asks for traces but the OpenTelemetry SDK is not installed "
                          "(pip install 'chorus-gateway[otel]')") from None
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "chorus"}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = [n.strip() for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",") if n.strip()]
    for name in names:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf")
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                        OTLPSpanExporter as Grpc,
                    )

                    exporter = Grpc()
                else:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    exporter = OTLPSpanExporter()
            except ImportError:
                raise ConfigError(f"tracing: the OTLP exporter for protocol {protocol!r} is not installed") from None
        else:
            raise ConfigError(f"tracing: OTEL_TRACES_EXPORTER {name!r} is not supported (otlp, console or none)")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class OtelTracing:
    """Chorus's tracer on an SDK (or any API) ``TracerProvider``; implements ``chorus.context.Tracer``."""

    def __init__(self, provider: Any, record_content: bool = False) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from chorus import __version__

        self.provider = provider
        self.record_content = record_content
        self.tracer = provider.get_tracer("chorus", __version__)
        self._context = context
        self._propagator = propagate.get_global_textmap()
        self._trace = trace
        self._kind = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._ok = StatusCode.OK

    # -- the contract's Tracer ---------------------------------------------------------------------

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
        with self.tracer.start_as_current_span(name, attributes=attributes, record_exception=False) as span:
            yield span

    def failed(self, span: Any, error_type: str) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(self._error)

    # -- the server span -----------------------------------------------------------------------------

    def begin(self, o: Observation, method: str, path: str, traceparent: str | None, tracestate: str | None) -> Any:
        """Start the request's server span (a child of the caller's ``traceparent``) and make it current.

        Returns what :meth:`end` needs.
        """
        parent: Context | None = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if tracestate is not None:
                carrier["tracestate"] = tracestate
            parent = self._propagator.extract(carrier)
        span = self.tracer.start_span(f"{method} {path}", context=parent, kind=self._kind.SERVER, attributes={
            "http.request.method": method, "http.route": path, "gen_ai.operation.name": "chat"})
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end(self, o: Observation, started: Any) -> None:
        """Attribute and end the server span from the finished observation; restore the context."""
        span, token = started
        try:
            if not span.is_recording():  # not sampled: nothing to attribute
                span.end()
                return
            if o.selector:
                span.update_name(f"chat {o.selector}")
            attributes: dict[str, Any] = {
                "http.response.status_code": o.status, "chorus.request_id": o.request_id,
                "gen_ai.usage.input_tokens": o.input_tokens, "gen_ai.usage.output_tokens": o.output_tokens,
                "chorus.upstream_calls": o.upstream_calls, "chorus.tool_calls": o.tool_calls,
            }
            optional = {
                "gen_ai.request.model": o.selector, "gen_ai.response.model": o.response_model,
                "gen_ai.provider.name": o.provider or None, "chorus.target.kind": o.target_kind or None,
                "gen_ai.agent.id": o.bot_id, "chorus.workspace": o.workspace, "chorus.key_id": o.key_id,
                "chorus.upstream.model": o.model, "chorus.cost_usd": o.cost, "error.type": o.error,
                "chorus.rejection": o.rejection,
            }
            attributes.update({k: v for k, v in optional.items() if v is not None})
            if o.tool_errors:
                attributes["chorus.tool_errors"] = o.tool_errors
            span.set_attributes(attributes)
            # an error: a 5xx, or a stream that failed after its start (status 200); a 4xx is the client's
            # error (HTTP semantic conventions), visible in http.response.status_code and error.type
            if o.status >= 500 or (o.error is not None and o.status < 400):
                span.set_status(self._error)
            span.end()
        finally:
            self._context.detach(token)

    def trace_id(self, started: Any) -> str:
        return format(started[0].get_span_context().trace_id, "032x")

    # -- upstream calls --------------------------------------------------------------------------------

    def upstream(self, ctx: RequestContext, target: Target) -> Span:
        """A client span for one model call; its ``traceparent`` goes into ``ctx.upstream_headers``."""
        span: Span = self.tracer.start_span(f"chat {target.model}", kind=self._kind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": target.model,
            "gen_ai.provider.name": target.provider.id,
        })
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        ctx.upstream_headers = carrier
        if self.record_content and span.is_recording():
            span.set_attribute("gen_ai.input.messages", _messages(ctx))
        return span

    def upstream_done(self, ctx: RequestContext, span: Span, answer: dict[str, Any] | None, error: BaseException | None,
                      content: str | None = None) -> None:
        """End an upstream span with the answer's model and usage, or the error."""
        ctx.upstream_headers = None
        if answer is not None and span.is_recording():
            model = answer.get("model")
            if isinstance(model, str):
                span.set_attribute("gen_ai.response.model", model)
            usage = answer.get("usage")
            if isinstance(usage, dict):
                for key, name in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                                  ("completion_tokens", "gen_ai.usage.output_tokens")):
                    if isinstance(usage.get(key), int):
                        span.set_attribute(name, usage[key])
            if self.record_content and content is not None:
                span.set_attribute("gen_ai.output.messages", content)
        if error is not None:
            span.set_attribute("error.type", error.code or "error" if isinstance(error, ChorusError)
                               else type(error).__name__)
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Flush and stop the exporters (an SDK provider)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _messages(ctx: RequestContext) -> str:
    import msgspec

    return msgspec.json.encode(ctx.request.messages).decode()


def environment_summary(environ: Mapping[str, str] = os.environ) -> str:
    """Where traces go, for the startup line."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint or environ.get("OTEL_TRACES_EXPORTER", "otlp")
