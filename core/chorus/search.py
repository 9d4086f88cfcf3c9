"""The search engine driver interface (entry point group ``chorus.search_engines``).

Engines are declared once in ``[[search_engines]]`` (``id``, ``driver`` and the driver's own keys,
validated strictly by its :attr:`SearchEngineDriver.settings_type`) and bots opt in with
``search = { engine = "<id>", ... }``. One instance per table lives for the whole process: open a
pooled HTTP client in :meth:`start`, close it in :meth:`aclose`.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

import msgspec

from chorus.config import Strict
from chorus.secrets import Secret

Recency = Literal["hour", "day", "week", "month", "year"]


class SearchEngineSettings(Strict):
    """Keys every ``[[search_engines]]`` table may use."""

    id: str
    driver: str
    base_url: str | None = None
    api_key: Secret | None = None
    timeout: float = 10.0


class SearchQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What to search for. Engines apply the filters they support and ignore the others."""

    query: str
    count: int = 5
    recency: Recency | None = None
    include_domains: list[str] = []
    exclude_domains: list[str] = []
    language: str | None = None      # e.g. "en"
    country: str | None = None       # ISO 3166-1 alpha-2, e.g. "US"


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """One web result."""

    title: str
    url: str
    snippet: str = ""
    date: str | None = None          # ISO 8601 date when the engine knows it


class SearchError(Exception):
    """An engine failure. ``kind``: ``timeout``, ``unavailable``, ``quota``, ``auth`` or ``bad_response``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class SearchEngineDriver(abc.ABC):
    """A web search engine."""

    settings_type: ClassVar[type[SearchEngineSettings]] = SearchEngineSettings

    def __init__(self, settings: SearchEngineSettings) -> None:
        self.settings = settings

    @property
    def id(self) -> str:
        return self.settings.id

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open the connection pool."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close what :meth:`start` opened."""

    @abc.abstractmethod
    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """At most ``query.count`` results, best first. Failures raise :class:`SearchError`."""
