"""Chorus: an OpenAI-compatible gateway that puts whole AI systems behind the ``model`` field."""

from chorus.contract.markers import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
