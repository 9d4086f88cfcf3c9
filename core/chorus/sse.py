"""Public import path. The incremental Server-Sent Events parser for upstream streams.

The definitions live in :mod:`chorus.net.sse`; plugins import them from here."""

from chorus.net.sse import (
    EventTooLarge,
    iter_sse_data,
)

__all__ = ['EventTooLarge', 'iter_sse_data']
