"""Public import path. The per-request context hooks receive (``RequestContext``, ``Source``,
and ``render_sources``, how sources are shown to the model).

The definitions live in :mod:`chorus.contract.context`; plugins import them from here."""

from chorus.contract.context import (
    SOURCES_HEADER,
    CallBudget,
    RequestContext,
    Source,
    render_sources,
)
from chorus.contract.observe import Observation, Tracer

__all__ = ['SOURCES_HEADER', 'CallBudget', 'Observation', 'RequestContext', 'Source', 'Tracer', 'render_sources']
