"""Public import path. The tool driver interface (entry point group ``chorus.tools``).

The definitions live in :mod:`chorus.contract.tools`; plugins import them from here."""

from chorus.contract.tools import (
    ToolContext,
    ToolDriver,
    ToolError,
    ToolSettings,
    ToolSpec,
)

__all__ = ['ToolContext', 'ToolDriver', 'ToolError', 'ToolSettings', 'ToolSpec']
