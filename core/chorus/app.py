"""Public import path. The ASGI application factory (``create_app``) for custom builds and tests.

The definitions live in :mod:`chorus.server.app`; plugins import them from here."""

from chorus.server.app import (  # noqa: F401 - re-exported
    build_keyring,
    build_knowledge,
    build_providers,
    build_search_engines,
    build_turn_store,
    create_app,
    error_response,
)

__all__ = ['build_keyring', 'build_knowledge', 'build_providers', 'build_search_engines', 'build_turn_store', 'create_app', 'error_response']
