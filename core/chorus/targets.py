"""Public import path. What a ``model`` selector resolves to (``Target``) and the selector prefixes.

The definitions live in :mod:`chorus.contract.targets`; plugins import them from here."""

from chorus.contract.targets import (
    BOT_PREFIX,
    MODEL_PREFIX,
    Target,
    unknown_target,
)

__all__ = ['BOT_PREFIX', 'MODEL_PREFIX', 'Target', 'unknown_target']
