"""Public import path. What hooks can look up: ``Workspace`` and the ``Registry`` view.

The definitions live in :mod:`chorus.contract.context`; plugins import them from here."""

from chorus.contract.context import Knowledge, Registry, Skillset, Workspace

__all__ = ["Knowledge", "Registry", "Skillset", "Workspace"]
