"""Public import path. The model provider driver interface (entry point group ``chorus.providers``).

The definitions live in :mod:`chorus.contract.providers`; plugins import them from here."""

from chorus.contract.providers import (
    ProviderDriver,
    ProviderSettings,
)

__all__ = ['ProviderDriver', 'ProviderSettings']
