"""Public import path. The egress guard every tool and page fetch goes through.

The definitions live in :mod:`chorus.contract.egress`; plugins import them from here."""

from chorus.contract.egress import (
    EgressDenied,
    EgressPolicy,
    Resolver,
    read_capped,
)

__all__ = ['EgressDenied', 'EgressPolicy', 'Resolver', 'read_capped']
