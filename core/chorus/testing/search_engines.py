"""A conformance kit for search engine drivers (:class:`chorus.search.SearchEngineDriver`).

Each ``check_<behaviour>`` coroutine tests one part of the driver contract (the Chorus docs, "Writing
a search engine plugin") against a :class:`~chorus.testing.replay.ReplayServer` and raises
:class:`AssertionError` saying what is wrong; :data:`CHECKS` lists them all. It runs under any test
runner (this module never imports pytest). A driver's tests supply a :class:`SearchEngineHarness`
and run every check, e.g. with pytest::

    from chorus.testing.search_engines import CHECKS, Check, SearchEngineHarness

    def example() -> SearchEngineHarness:
        return SearchEngineHarness(
            engine=ExampleEngine,
            table={"id": "web", "driver": "example", "api_key": KEY},
            recording=load(RECORDINGS / "web_search.json", api_key=KEY),
            query=SearchQuery(query="kubernetes gateway api"),
            page=page,                     # results → the API's JSON answer
            base_path="/v1",               # when base_url includes a path
        )

    @pytest.fixture
    async def harness() -> AsyncIterator[SearchEngineHarness]:
        async with example() as running:   # starts the server; closes the drivers, then verifies it
            yield running

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_conformance(check: Check, harness: SearchEngineHarness) -> None:
        await check(harness)

What the driver must provide (the :class:`SearchEngineHarness` fields):

* ``engine``, the driver class, and ``table``, a ``[[search_engines]]`` table without ``base_url``
  that includes ``api_key`` as a plain string: drivers are built the way Chorus builds them
  (the table validated by ``engine.settings_type``, then ``engine(settings)``), with ``base_url``
  pointed at the replay server (``server.url + base_path``).
* ``recording``, the recorded exchange of a successful search for ``query`` (the request checked
  as recorded, the answer with at least one result), and ``page``, which writes results as the
  API's success body (raw: the checks pass untidy titles, duplicates and non-http URLs).
* Optionally ``error_body`` (the API's error body around a free-text message), ``malformed``
  (JSON bodies that are not the API's shape), ``malformed_fragment`` (what the message of such a
  ``bad_response`` says, e.g. ``"not Brave JSON"``) and ``errors`` (the API's own failure
  answers, e.g. recorded error codes, each with the kind and message it must give).

Besides the contract, the checks hold drivers to the conventions of :mod:`chorus.search`'s helpers
(:class:`~chorus.search.HttpSearchEngine`, :func:`~chorus.search.transport_errors`): an error
message names the engine as ``repr(id)``, ``HTTP <status>`` for a status and the httpx exception
class for a transport failure; a bad ``base_url`` is a ``ConfigError`` saying
``'<id>': base_url must be an http(s) URL``. The API key must never appear in an error (its
message, arguments or formatted traceback) nor in a log record.

:func:`expect_error` and :meth:`SearchEngineHarness.make` serve a driver's own tests too (its
API's particular statuses, error codes and fields). Nothing here measures time: the timeout check
delays the answer past the driver's ``timeout`` and expects the ``timeout`` kind, and every search
is guarded by :data:`GUARD` seconds against a hang only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from chorus.contract.config import convert
from chorus.contract.errors import ConfigError
from chorus.contract.search import SearchEngineDriver, SearchEngineSettings, SearchError, SearchQuery, SearchResult
from chorus.testing._expect import expect as _expect
from chorus.testing.replay import UNCHECKED, Exchange, ReplayServer, unused_port

__all__ = [
    "CHECKS",
    "GUARD",
    "STATUS_KINDS",
    "Check",
    "SearchEngineHarness",
    "expect_error",
    "json_error_body",
]

#: Seconds any one search may take before a check calls it hung (a deadlock guard, not a time limit).
GUARD = 60.0

#: HTTP statuses and the kind each maps to, whatever the body says (:func:`check_statuses_map_to_kinds`).
STATUS_KINDS: dict[int, str] = {
    400: "bad_response", 401: "auth", 403: "auth", 404: "bad_response", 429: "quota",
    500: "unavailable", 502: "unavailable", 503: "unavailable",
}

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MARKUP = re.compile(r"</?(?:b|strong|em|i|mark|span|p|br|div|a)\b[^<>]*>", re.IGNORECASE)


def json_error_body(text: str) -> bytes:
    """A generic JSON error body carrying ``text`` (the default of :attr:`SearchEngineHarness.error_body`)."""
    return json.dumps({"error": {"message": text}, "detail": text}).encode()


@dataclass
class SearchEngineHarness:
    """What the checks need to know about one driver, and the replay server they run it against.

    Use it as ``async with harness:`` (starts :attr:`server`; on leaving, closes every driver it
    made, then closes and verifies the server), once per test: it keeps the drivers it made.
    """

    #: The driver class.
    engine: type[SearchEngineDriver]
    #: A ``[[search_engines]]`` table without ``base_url``: ``id``, ``driver``, ``api_key`` (a plain
    #: string, required: the checks look for it in errors and logs) and any keys the driver requires.
    table: Mapping[str, Any]
    #: The recorded exchange of a successful search for :attr:`query` (at least one result).
    recording: Exchange
    #: The query :attr:`recording` answers.
    query: SearchQuery
    #: Writes results as the API's success body, fields as given (``date`` is ``YYYY-MM-DD`` or ``None``).
    page: Callable[[Sequence[SearchResult]], bytes]
    #: Appended to the server's URL to make ``base_url`` (e.g. ``"/res/v1"``).
    base_path: str = ""
    #: The API's error body around a free-text message (the checks echo the key in it).
    error_body: Callable[[str], bytes] = json_error_body
    #: JSON bodies that are not the API's shape, answered with status 200 (besides the kit's own).
    malformed: Sequence[bytes] = ()
    #: What the message of a ``bad_response`` for a malformed body contains; ``""`` checks nothing.
    malformed_fragment: str = ""
    #: The API's own failure answers (its error codes, extra statuses), usually recorded: a case name →
    #: ``(exchange, kind, message fragment)``, each answering a search for :attr:`query`.
    errors: Mapping[str, tuple[Exchange, str, str]] = field(default_factory=dict)
    #: The loopback server the drivers are pointed at.
    server: ReplayServer = field(default_factory=ReplayServer)
    _made: list[SearchEngineDriver] = field(default_factory=list, init=False, repr=False)

    @property
    def id(self) -> str:
        """The engine id of the drivers the harness makes."""
        return str(self.table["id"])

    @property
    def api_key(self) -> str:
        """The key the drivers are configured with."""
        key = self.table.get("api_key")
        if not isinstance(key, str) or not key:
            raise ValueError("SearchEngineHarness.table must set api_key to a non-empty string")
        return key

    @property
    def url(self) -> str:
        """The ``base_url`` that points a driver at :attr:`server`."""
        return self.server.url + self.base_path

    def settings(self, **raw: Any) -> SearchEngineSettings:
        """The table updated with ``raw``, validated as Chorus does (``ConfigError`` names ``search_engines[0]``)."""
        result: SearchEngineSettings = convert({**self.table, **raw}, self.engine.settings_type, "search_engines[0]")
        return result

    def build(self, **raw: Any) -> SearchEngineDriver:
        """A driver that is not started, pointed at :attr:`server` unless ``raw`` sets ``base_url``."""
        driver = self.engine(self.settings(**{"base_url": self.url, **raw}))
        self._made.append(driver)
        return driver

    async def make(self, **raw: Any) -> SearchEngineDriver:
        """A started :meth:`build`; closed when the harness is left."""
        driver = self.build(**raw)
        await driver.start()
        return driver

    def exchange(self, status: int, body: bytes = b"", content_type: str = "application/json") -> Exchange:
        """An answer to the driver's request (method and path as recorded, the rest unchecked)."""
        return Exchange(
            method=self.recording.method, path=self.recording.path, status=status, body=body,
            response_headers={"content-type": content_type},
        )

    def answer(self, results: Sequence[SearchResult]) -> Exchange:
        """A successful answer holding ``results`` (:attr:`page`) to any query."""
        return self.recording.but(query=None, json=UNCHECKED, body=self.page(results))

    async def __aenter__(self) -> SearchEngineHarness:
        await self.server.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for driver in self._made:
                await driver.aclose()
        finally:
            self._made.clear()
            await self.server.__aexit__(exc_type, exc, tb)


#: A conformance check: raises :class:`AssertionError` when the driver breaks the contract.
Check = Callable[[SearchEngineHarness], Awaitable[None]]


# -- helpers ----------------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        except Exception:  # a record that cannot be formatted is logging's problem, not the driver's
            self.handleError(record)
            return
        self.texts.append(text)


@contextmanager
def _logs() -> Iterator[list[str]]:
    """Every log record (DEBUG and up) emitted inside the block, formatted."""
    root = logging.getLogger()
    handler, level = _Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.texts
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def _assert_no_key(harness: SearchEngineHarness, logs: Sequence[str], error: BaseException | None = None) -> None:
    key = harness.api_key
    for text in logs:
        _expect(key not in text, f"the API key appears in a log record: {text.replace(key, '<KEY>')!r}")
    if error is not None:
        shown = {
            "message": str(getattr(error, "message", "")),
            "str()": str(error),
            "args": repr(error.args),
            "traceback": "".join(traceback.format_exception(error)),
        }
        for where, text in shown.items():
            _expect(key not in text, f"the API key appears in the error's {where}: {text.replace(key, '<KEY>')!r}")


async def _call(driver: SearchEngineDriver, query: SearchQuery) -> list[SearchResult]:
    try:
        async with asyncio.timeout(GUARD) as guard:
            return await driver.search(query)
    except TimeoutError:
        if guard.expired():
            raise AssertionError(f"search() did not return within {GUARD:g} s (hung?)") from None
        raise


async def _results(harness: SearchEngineHarness, driver: SearchEngineDriver, query: SearchQuery) -> list[SearchResult]:
    """``driver.search(query)``, which must succeed with well-formed results (the key in no log)."""
    with _logs() as logs:
        try:
            results = await _call(driver, query)
        except SearchError as exc:
            raise AssertionError(f"expected results for {query.query!r}, got SearchError({exc.kind!r}): {exc}") from exc
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"search() raised {type(exc).__name__} ({exc}) instead of returning results") from exc
    _assert_no_key(harness, logs)
    _expect(isinstance(results, list), f"search() returned {type(results).__name__}, not a list")
    _expect(len(results) <= max(query.count, 0), f"{len(results)} results for count={query.count} (at most count)")
    seen: set[str] = set()
    for result in results:
        _expect(isinstance(result, SearchResult), f"a result is a {type(result).__name__}, not a SearchResult")
        _expect(result.url.startswith(("http://", "https://")), f"a result's URL is not http(s): {result.url!r}")
        _expect(result.url not in seen, f"a result is repeated: {result.url!r}")
        seen.add(result.url)
        _expect(result.title.strip(), f"an empty title (it should fall back to the URL): {result!r}")
        for name, text in (("title", result.title), ("snippet", result.snippet)):
            _expect(text == text.strip(), f"the {name} has whitespace at its ends: {text!r}")
            _expect(not _MARKUP.search(text), f"the {name} holds markup (it must be plain text): {text!r}")
        _expect(result.date is None or _DATE.fullmatch(result.date), f"a date is not YYYY-MM-DD: {result.date!r}")
    return results


def _urls(results: Sequence[SearchResult]) -> list[str]:
    return [r.url for r in results]


async def _error(driver: SearchEngineDriver, query: SearchQuery) -> SearchError:
    try:
        results = await _call(driver, query)
    except SearchError as exc:
        return exc
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"search() raised {type(exc).__name__} ({exc}); a failure must raise SearchError only"
        ) from exc
    raise AssertionError(f"expected a SearchError, got {len(results)} result(s)")


async def expect_error(
    harness: SearchEngineHarness,
    exchange: Exchange | None,
    kind: str,
    fragment: str = "",
    *,
    driver: SearchEngineDriver | None = None,
    query: SearchQuery | None = None,
) -> SearchError:
    """Queue ``exchange`` (``None``: none), search and return the :class:`SearchError` raised.

    Fails unless the error has ``kind``, its message contains ``fragment`` and names the engine
    (``repr(id)``), and the API key shows neither in the error nor in a log record. ``driver``
    defaults to a new :meth:`SearchEngineHarness.make`, ``query`` to :attr:`SearchEngineHarness.query`.
    """
    if exchange is not None:
        harness.server.expect(exchange)
    driver = driver if driver is not None else await harness.make()
    query = query if query is not None else harness.query
    with _logs() as logs:
        error = await _error(driver, query)
    _assert_no_key(harness, logs, error)
    what = f"SearchError({error.kind!r}, {error.message!r})"
    _expect(error.kind == kind, f"expected kind {kind!r}, got {what}")
    _expect(fragment in error.message, f"the message should contain {fragment!r}: {what}")
    _expect(repr(harness.id) in error.message, f"the message should name the engine {harness.id!r}: {what}")
    return error


# -- the checks -------------------------------------------------------------------------------------


async def check_recorded_search(harness: SearchEngineHarness) -> None:
    """The recorded request is sent exactly as recorded, and its answer gives well-formed results.

    Well-formed: a list of at most ``count`` :class:`SearchResult`, http(s) URLs without repeats,
    non-empty titles, plain-text titles and snippets, dates ``YYYY-MM-DD`` or ``None``.
    """
    harness.server.expect(harness.recording)
    results = await _results(harness, await harness.make(), harness.query)
    _expect(results, "the recorded answer gave no results (record one that has some)")


async def check_count_is_honoured(harness: SearchEngineHarness) -> None:
    """At most ``count`` results, best first: a smaller ``count`` gives the first of the same results,
    a larger one all of them."""
    driver = await harness.make()
    harness.server.expect(harness.recording)
    full = await _results(harness, driver, harness.query)
    for count in [*range(1, min(len(full), 3) + 1), len(full) + 10]:
        harness.server.expect(harness.recording.but(query=None, json=UNCHECKED))
        query = SearchQuery(query=harness.query.query, count=count)
        got = await _results(harness, driver, query)
        _expect(got == full[:count], f"count={count} gave {_urls(got)}, not the first of {_urls(full)}")


async def check_results_are_normalised(harness: SearchEngineHarness) -> None:
    """Whitespace is collapsed, an empty title becomes the URL, non-http(s) URLs and repeats are dropped."""
    raw = [
        SearchResult(title="  Tokio:\n  an  async\truntime ", url="https://tokio.rs/", snippet=" Fast,\n reliable. ",
                     date="2024-08-07"),
        SearchResult(title="Tokio again", url="https://tokio.rs/", snippet="A repeat."),
        SearchResult(title="Script", url="javascript:alert(1)", snippet="Not a web page."),
        SearchResult(title="Files", url="ftp://files.example.org/tokio.tar.gz", snippet="Not http."),
        SearchResult(title="", url="https://example.org/untitled", snippet="No title."),
        SearchResult(title="Docs", url="http://docs.example.com/a"),
    ]
    harness.server.expect(harness.answer(raw))
    got = await _results(harness, await harness.make(), SearchQuery(query="tokio", count=10))
    want = [
        SearchResult(title="Tokio: an async runtime", url="https://tokio.rs/", snippet="Fast, reliable.",
                     date="2024-08-07"),
        SearchResult(title="https://example.org/untitled", url="https://example.org/untitled", snippet="No title."),
        SearchResult(title="Docs", url="http://docs.example.com/a"),
    ]
    _expect(got == want, f"expected {want}, got {got}")


async def check_domain_filters_are_enforced(harness: SearchEngineHarness) -> None:
    """Results off ``include_domains`` or on ``exclude_domains`` are dropped, whatever the API answers.

    Subdomains count as the domain, look-alikes do not; domains are taken as users type them
    (``*.Example.org``, URLs).
    """
    raw = [
        SearchResult(title=f"Page {host}", url=f"https://{host}/page", snippet="Text.")
        for host in ("example.org", "docs.example.org", "notexample.org", "example.org.evil.test", "other.test")
    ]
    driver = await harness.make()
    cases: list[tuple[list[str], list[str], list[str]]] = [
        (["*.Example.org"], [], ["example.org", "docs.example.org"]),
        ([], ["https://EXAMPLE.org/docs"], ["notexample.org", "example.org.evil.test", "other.test"]),
        (["example.org", "other.test"], ["docs.example.org"], ["example.org", "other.test"]),
    ]
    for include, exclude, hosts in cases:
        harness.server.expect(harness.answer(raw))
        query = SearchQuery(query="page", count=10, include_domains=include, exclude_domains=exclude)
        got = [urlsplit(r.url).hostname for r in await _results(harness, driver, query)]
        _expect(got == hosts, f"include_domains={include}, exclude_domains={exclude}: expected {hosts}, got {got}")


async def check_no_results_is_an_empty_list(harness: SearchEngineHarness) -> None:
    """An answer without results is ``[]``, not an error."""
    harness.server.expect(harness.answer([]))
    got = await _results(harness, await harness.make(), harness.query)
    _expect(got == [], f"expected [], got {got}")


async def check_nothing_to_search_sends_no_request(harness: SearchEngineHarness) -> None:
    """A blank query or a ``count`` below 1 is ``[]`` at once, without a request."""
    driver = await harness.make()
    before = len(harness.server.received)
    text = harness.query.query
    for query in (SearchQuery(query=""), SearchQuery(query="   "), SearchQuery(query="\t\n"),
                  SearchQuery(query=text, count=0), SearchQuery(query=text, count=-1)):
        got = await _results(harness, driver, query)
        _expect(got == [], f"{query} gave {got}, expected []")
    sent = harness.server.received[before:]
    _expect(not sent, f"nothing to search, yet {len(sent)} request(s) were sent")


async def check_connection_is_pooled(harness: SearchEngineHarness) -> None:
    """Consecutive searches on one driver reuse one kept-alive connection (the pool opened in ``start``)."""
    harness.server.expect(harness.recording, harness.recording)
    driver = await harness.make()
    before = len(harness.server.received)
    for _ in range(2):
        await _results(harness, driver, harness.query)
    got = harness.server.received[before:]
    _expect(len(got) == 2, f"expected 2 requests, got {len(got)}")
    _expect(got[0].peer == got[1].peer, f"two searches came from two connections ({got[0].peer}, {got[1].peer})")


async def check_statuses_map_to_kinds(harness: SearchEngineHarness) -> None:
    """Statuses map to kinds as :data:`STATUS_KINDS` says, and a redirect is ``bad_response``, not followed.

    Whatever the body (text, HTML or :attr:`SearchEngineHarness.error_body`, each echoing the key),
    the message says ``HTTP <status>`` and never holds the key. One driver answers them all.
    """
    key = harness.api_key
    driver = await harness.make()
    bodies = [
        (f"token {key} is not valid".encode(), "text/plain"),
        (f"<html><body><h1>Error</h1><p>key {key}</p></body></html>".encode(), "text/html; charset=utf-8"),
        (harness.error_body(f"invalid API key {key}"), "application/json"),
    ]
    for status, kind in STATUS_KINDS.items():
        for body, content_type in bodies:
            exchange = harness.exchange(status, body, content_type)
            await expect_error(harness, exchange, kind, f"HTTP {status}", driver=driver)
    for status in (301, 302, 307, 308):
        for location in ("/login", f"{harness.server.url}/moved"):  # followed, either would be a 418 mismatch
            exchange = harness.exchange(status, b"").but(response_headers={"location": location})
            await expect_error(harness, exchange, "bad_response", f"HTTP {status}", driver=driver)


async def check_api_errors_map_to_kinds(harness: SearchEngineHarness) -> None:
    """Each of the API's own failure answers (:attr:`SearchEngineHarness.errors`) gives its kind and message.

    The key shows in no error; a harness that lists no such answers passes.
    """
    for name, (exchange, kind, fragment) in harness.errors.items():
        try:
            await expect_error(harness, exchange, kind, fragment)
        except AssertionError as exc:
            raise AssertionError(f"errors[{name!r}]: {exc}") from None


async def check_malformed_bodies_are_bad_response(harness: SearchEngineHarness) -> None:
    """A 200 answer that is not the API's JSON (HTML, empty, truncated, another shape) is ``bad_response``."""
    key = harness.api_key
    bodies = [
        (f"<!DOCTYPE html><title>Maintenance</title><p>{key}</p>".encode(), "text/html"),
        (b"", "application/json"),
        (b'{"results": [{"url": ', "application/json"),
        (b"\xff\xfe\x00not json", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'"ok"', "application/json"),
        *((body, "application/json") for body in harness.malformed),
    ]
    driver = await harness.make()
    for body, content_type in bodies:
        exchange = harness.exchange(200, body, content_type)
        await expect_error(harness, exchange, "bad_response", harness.malformed_fragment, driver=driver)


async def check_slow_answer_is_a_timeout(harness: SearchEngineHarness) -> None:
    """An answer delayed past ``timeout`` is cut: ``SearchError`` ``timeout`` (the delayed answer would succeed)."""
    driver = await harness.make(timeout=0.5)
    await expect_error(harness, harness.recording.but(delay=4.0), "timeout", driver=driver)


async def check_refused_connection_is_unavailable(harness: SearchEngineHarness) -> None:
    """A refused connection is ``unavailable``; the message names the exception class, not the URL."""
    port = unused_port()
    driver = await harness.make(base_url=f"http://127.0.0.1:{port}{harness.base_path}", timeout=2.0)
    error = await expect_error(harness, None, "unavailable", "ConnectError", driver=driver)
    _expect(str(port) not in error.message, f"the message shows the URL: {error.message!r}")


async def check_unstarted_or_closed_is_unavailable(harness: SearchEngineHarness) -> None:
    """Searching before ``start`` or after ``aclose`` is ``unavailable``; both are idempotent."""
    driver = harness.build()
    await expect_error(harness, None, "unavailable", driver=driver)
    await driver.start()
    await driver.start()
    harness.server.expect(harness.recording)
    _expect(await _results(harness, driver, harness.query), "no results after start() twice")
    await driver.aclose()
    await driver.aclose()
    await expect_error(harness, None, "unavailable", driver=driver)


async def check_key_stays_secret(harness: SearchEngineHarness) -> None:
    """The key shows in no ``repr`` of the settings or driver, no log record and no error.

    Checked with a successful search and with a 401 whose error body echoes the key.
    """
    key = harness.api_key
    settings = harness.settings(base_url="http://127.0.0.1:9")
    for what, text in (("settings", repr(settings)), ("settings", str(settings)), ("driver", repr(harness.build()))):
        _expect(key not in text, f"the API key appears in the {what}: {text.replace(key, '<KEY>')!r}")
    harness.server.expect(harness.recording)
    await _results(harness, await harness.make(), harness.query)
    echo = harness.exchange(401, harness.error_body(f"the key {key} is not valid"))
    await expect_error(harness, echo, "auth")


async def check_base_url_must_be_http(harness: SearchEngineHarness) -> None:
    """A ``base_url`` that is not an absolute http(s) URL with a host is a ``ConfigError`` naming the engine."""
    expected = f"{harness.id!r}: base_url must be an http(s) URL"
    for url in ("127.0.0.1:8888", "api.example.com/v1", "ftp://search.example", "file:///tmp/search",
                "unix:///run/search.sock", "http://"):
        try:
            harness.engine(harness.settings(base_url=url))
        except ConfigError as exc:
            _expect(expected in str(exc), f"base_url={url!r}: the error should say {expected!r}: {exc}")
        else:
            raise AssertionError(f"base_url={url!r} was accepted")


async def check_settings_are_strict(harness: SearchEngineHarness) -> None:
    """An unknown key or a wrong type is a ``ConfigError`` naming the table and the key."""
    for raw, fragment in (({"no_such_key": 1}, "unknown field `no_such_key`"), ({"timeout": "soon"}, "timeout")):
        try:
            harness.settings(**raw)
        except ConfigError as exc:
            text = str(exc)
            _expect("search_engines[0]" in text and fragment in text,
                    f"{raw}: the error should say {fragment!r}: {text}")
        else:
            raise AssertionError(f"the settings accepted {raw}")


async def check_entry_point_registers_the_driver(harness: SearchEngineHarness) -> None:
    """The ``chorus.search_engines`` entry point named like the table's ``driver`` loads the driver class."""
    name = str(harness.table["driver"])
    found = [ep for ep in metadata.entry_points(group="chorus.search_engines") if ep.name == name]
    _expect(len(found) == 1, f"expected one chorus.search_engines entry point {name!r}, found {len(found)}")
    _expect(found[0].load() is harness.engine, f"entry point {name!r} loads {found[0].value}, not {harness.engine}")
    from chorus.plugins.manager import PluginManager

    loaded = PluginManager(load_entrypoints=False, env={}).driver("search_engines", name)
    _expect(loaded is harness.engine, f"Chorus loads {loaded} for driver {name!r}, not {harness.engine}")


#: Every check, in the order a report lists them.
CHECKS: tuple[Check, ...] = (
    check_recorded_search,
    check_count_is_honoured,
    check_results_are_normalised,
    check_domain_filters_are_enforced,
    check_no_results_is_an_empty_list,
    check_nothing_to_search_sends_no_request,
    check_connection_is_pooled,
    check_statuses_map_to_kinds,
    check_api_errors_map_to_kinds,
    check_malformed_bodies_are_bad_response,
    check_slow_answer_is_a_timeout,
    check_refused_connection_is_unavailable,
    check_unstarted_or_closed_is_unavailable,
    check_key_stays_secret,
    check_base_url_must_be_http,
    check_settings_are_strict,
    check_entry_point_registers_the_driver,
)
