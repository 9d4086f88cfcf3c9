"""Chorus search engine driver ``tavily``: the Tavily search API."""

from chorus_search_tavily.engine import TavilyEngine, TavilySettings

__version__ = "0.1.0"

__all__ = ["TavilyEngine", "TavilySettings", "__version__"]
