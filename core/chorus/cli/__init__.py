"""The ``chorus`` command line (layer: command line). ``chorus.cli:main`` is the console script."""

from chorus.cli.main import app_factory, main

__all__ = ["app_factory", "main"]
