"""Public import path. Request fields a plugin owns (``RequestField``, the ``request_fields`` hook).

The definitions live in :mod:`chorus.contract.fields`; plugins import them from here."""

from chorus.contract.fields import RequestField

__all__ = ["RequestField"]
