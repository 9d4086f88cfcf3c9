"""The search engine driver interface (entry point group ``chorus.search_engines``).

Engines are declared once in ``[[search_engines]]`` (``id``, ``driver`` and the driver's own keys,
validated strictly by its :attr:`SearchEngineDriver.settings_type`) and bots opt in with
``search = { engine = "<id>", ... }``. One instance per table lives for the whole process: open a
pooled HTTP client in :meth:`start`, close it in :meth:`aclose`.
"""

from __future__ import annotations

import abc
import contextlib
import email.utils
import re
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    import httpx

from chorus.contract.config import Strict
from chorus.contract.secrets import Secret

Recency = Literal["hour", "day", "week", "month", "year"]

#: ``ctx.state`` key under which a request turns web search on for its target (a
#: :class:`~chorus.contract.config.SearchOptions`): the Responses API's hosted ``web_search`` tool sets
#: it, and the web search plugin uses it like a bot's ``search`` options when the bot has none.
HOSTED_SEARCH_STATE = "web_search.hosted"


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


class HttpSearchEngine(SearchEngineDriver):
    """A search engine reached over HTTP: validates ``base_url`` and owns one pooled client.

    Subclasses give the headers every request carries (:meth:`headers`) and use ``self._client``
    (``None`` until :meth:`start`) in :meth:`search`.
    """

    def __init__(self, settings: SearchEngineSettings) -> None:
        super().__init__(settings)
        self._client: httpx.AsyncClient | None = None
        base_url = self.settings.base_url
        if base_url is None or not is_http_url(base_url):
            from chorus.contract.errors import ConfigError

            raise ConfigError(f"search engine {self.id!r}: base_url must be an http(s) URL")

    def headers(self) -> dict[str, str]:
        """Headers sent with every request (authentication included)."""
        return {"accept": "application/json"}

    async def start(self) -> None:
        """Open the connection pool (idempotent)."""
        if self._client is not None:
            return
        import httpx

        self._client = httpx.AsyncClient(
            base_url=(self.settings.base_url or "").rstrip("/"), headers=self.headers(),
            timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


# -- helpers for drivers (pure unless noted) --------------------------------------------------------
#
# The mapping every web search driver repeats: domain filters, dates, statuses and transport failures
# to SearchError kinds. The built-in ``searxng`` driver and the ``brave`` and ``tavily`` contribs use
# them; third-party drivers may too (they depend on chorus-gateway).

_SPACE = re.compile(r"\s+")


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an absolute ``http``/``https`` URL with a host (for checking ``base_url``)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def collapse_space(text: str | None) -> str:
    """``text`` with each run of whitespace made one space and the ends stripped (``None`` → ``""``)."""
    return _SPACE.sub(" ", text or "").strip()


def normalize_domains(domains: Iterable[str]) -> list[str]:
    """Domains as users type them reduced to bare lower-case host names, first occurrence order.

    Scheme, path, port, a leading ``*.`` and dots at either end are removed; empties and repeats
    are dropped: ``["https://GitHub.com/python", "*.Tokio.rs.", " "]`` → ``["github.com", "tokio.rs"]``.
    """
    out: list[str] = []
    for raw in domains:
        value = raw.strip().lower()
        host = (urlsplit(value if "//" in value else f"//{value}").hostname or "").removeprefix("*.").strip(".")
        if host and host not in out:
            out.append(host)
    return out


def on_domains(url: str, domains: list[str]) -> bool:
    """Whether ``url``'s host is one of ``domains`` or a subdomain of one.

    ``domains`` must already be normalised (:func:`normalize_domains`); an empty list matches nothing.
    """
    host = (urlsplit(url).hostname or "").rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def with_sites(text: str, domains: Iterable[str]) -> str:
    """``text`` restricted to ``domains`` with ``site:`` operators, for engines that honour them.

    One domain appends ``site:a``, several append ``(site:a OR site:b)``; domains are normalised
    first, and ``text`` is returned unchanged when none remain.
    """
    sites = [f"site:{d}" for d in normalize_domains(domains)]
    if not sites:
        return text
    return f"{text} {sites[0]}" if len(sites) == 1 else f"{text} ({' OR '.join(sites)})"


def iso_date(value: Any, layouts: Iterable[str] = ()) -> str | None:
    """``YYYY-MM-DD`` (the date as written, no time zone conversion) from a timestamp, else ``None``.

    Tried in order: ISO 8601 (:meth:`datetime.fromisoformat`), each :func:`~datetime.datetime.strptime`
    layout in ``layouts`` (e.g. ``"%B %d, %Y"``), then RFC 2822. Anything that is not a non-blank
    string, or that none of them parse (``"2 days ago"``), is ``None``; this never raises.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        pass
    for layout in layouts:
        try:
            return datetime.strptime(text, layout).date().isoformat()
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(text).date().isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def status_kind(status: int, *, quota: Collection[int] = (429,)) -> str:
    """The :class:`SearchError` kind for a non-200 HTTP status.

    ``quota`` for a status in ``quota`` (429 unless the API has more, e.g. Tavily's 432/433), then
    ``auth`` for 401/403, ``unavailable`` for 5xx and ``bad_response`` for anything else
    (redirects, other 4xx).
    """
    if status in quota:
        return "quota"
    if status in (401, 403):
        return "auth"
    if status >= 500:
        return "unavailable"
    return "bad_response"


def select_results(results: Iterable[SearchResult], query: SearchQuery) -> list[SearchResult]:
    """The results a driver may return for ``query``, in order, read lazily up to the last one kept.

    A result is kept when its ``url`` is ``http(s)``, not already kept, on ``query.include_domains``
    (when any) and not on ``query.exclude_domains`` (subdomains included). Reading stops once
    ``query.count`` are kept. Give it a generator so that results past that are never built.
    """
    include = normalize_domains(query.include_domains)
    exclude = normalize_domains(query.exclude_domains)
    seen: set[str] = set()
    kept: list[SearchResult] = []
    for result in results:
        url = result.url
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        if (include and not on_domains(url, include)) or (exclude and on_domains(url, exclude)):
            continue
        seen.add(url)
        kept.append(result)
        if len(kept) >= query.count:
            break
    return kept


@contextlib.contextmanager
def transport_errors(engine_id: str) -> Iterator[None]:
    """Turn httpx and timeout failures inside the block into :class:`SearchError` for ``engine_id``.

    ``TimeoutError`` (from ``asyncio.timeout``) and ``httpx.TimeoutException`` → ``timeout``;
    ``httpx.DecodingError`` → ``bad_response``; any other ``httpx.HTTPError`` → ``unavailable``
    (the message names the exception class only). The original exception is suppressed
    (``from None``), so no URL or header shows with the error. Other exceptions pass through.
    """
    import httpx  # imported here: the gateway itself does not need httpx to load this module

    try:
        yield
    except (TimeoutError, httpx.TimeoutException):
        raise SearchError("timeout", f"search engine {engine_id!r} did not answer in time") from None
    except httpx.DecodingError:
        raise SearchError("bad_response", f"search engine {engine_id!r} sent an undecodable body") from None
    except httpx.HTTPError as exc:
        raise SearchError(
            "unavailable", f"search engine {engine_id!r} is unreachable ({type(exc).__name__})"
        ) from None
