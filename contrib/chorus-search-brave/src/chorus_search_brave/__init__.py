"""Chorus search engine driver ``brave``: the Brave Search web search API."""

from chorus_search_brave.engine import BraveEngine, BraveSettings

__version__ = "0.1.0"

__all__ = ["BraveEngine", "BraveSettings", "__version__"]
