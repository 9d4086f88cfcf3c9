"""Public import path. The per-request context hooks receive (``RequestContext``, ``Source``).

The definitions live in :mod:`chorus.contract.context`; plugins import them from here."""

from chorus.contract.context import (
    CallBudget,
    RequestContext,
    Source,
)
from chorus.contract.observe import Observation, Tracer

__all__ = ['CallBudget', 'Observation', 'RequestContext', 'Source', 'Tracer']
