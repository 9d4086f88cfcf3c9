"""The one assertion primitive of the conformance kits (private)."""

from __future__ import annotations


def expect(condition: object, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds (explicit, so ``python -O`` cannot skip a check)."""
    if not condition:
        raise AssertionError(message)
