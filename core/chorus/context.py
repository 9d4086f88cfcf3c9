"""Public import path. The per-request context hooks receive (``RequestContext``, ``Source``).

The definitions live in :mod:`chorus.contract.context`; plugins import them from here."""

from chorus.contract.context import (
    CallBudget,
    RequestContext,
    Source,
)

__all__ = ['CallBudget', 'RequestContext', 'Source']
