"""Public import path. The ``Secret`` wrapper for settings that must never be printed.

The definitions live in :mod:`chorus.contract.secrets`; plugins import them from here."""

from chorus.contract.secrets import (
    Secret,
    dec_hook,
)

__all__ = ['Secret', 'dec_hook']
