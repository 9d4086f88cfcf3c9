"""Public import path. The ASGI application factory (``create_app``) for custom builds and tests.

The definition lives in :mod:`chorus.server.app`."""

from chorus.server.app import create_app

__all__ = ["create_app"]
