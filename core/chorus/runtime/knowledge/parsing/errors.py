"""The parsing error and how exception messages are shortened for it."""

from __future__ import annotations


class ParseError(ValueError):
    """A file cannot be turned into text; ``reason`` (also ``str(error)``) says why, for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."
