"""chorus.testing.search_engines: the checks are well formed, and they fail a driver that breaks the contract."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys

import pytest

from chorus.contract.search import SearchError, SearchQuery, SearchResult
from chorus.testing import search_engines
from chorus.testing.search_engines import CHECKS, Check
from chorus_plugins.search_searxng import SearxngEngine
from tests.test_search_searxng import searxng_harness


def test_every_check_is_a_documented_coroutine_and_listed() -> None:
    for check in CHECKS:
        assert inspect.iscoroutinefunction(check), f"{check.__name__} is not an async function"
        assert check.__name__.startswith("check_"), check.__name__
        assert (check.__doc__ or "").strip(), f"{check.__name__} has no docstring"
    defined = {name for name, value in vars(search_engines).items() if name.startswith("check_") and callable(value)}
    assert defined == {check.__name__ for check in CHECKS}, "a check_ function is missing from CHECKS (or repeated)"
    assert len(set(CHECKS)) == len(CHECKS)


def test_the_kit_never_imports_pytest() -> None:
    code = "import sys, chorus.testing.search_engines; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class _Leaky(SearxngEngine):
    """Puts the key in its error messages."""

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        try:
            return await super().search(query)
        except SearchError as exc:
            key = self.settings.api_key.get() if self.settings.api_key else ""
            raise SearchError(exc.kind, f"{exc.message} (key {key})") from None


class _Chatty(SearxngEngine):
    """Logs its key."""

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        key = self.settings.api_key.get() if self.settings.api_key else ""
        logging.getLogger("chatty").debug("searching with %s", key)
        return await super().search(query)


class _Unbounded(SearxngEngine):
    """Ignores ``count``."""

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        return await super().search(SearchQuery(query=query.query, count=100) if query.count > 0 else query)


class _Crashing(SearxngEngine):
    """Lets a decoding error escape instead of raising SearchError."""

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        try:
            return await super().search(query)
        except SearchError as exc:
            if exc.kind == "bad_response":
                raise ValueError("cannot decode") from None
            raise


@pytest.mark.parametrize(
    ("engine", "check", "fragment"),
    [
        (_Leaky, search_engines.check_statuses_map_to_kinds, "the API key appears in the error's message"),
        (_Chatty, search_engines.check_key_stays_secret, "the API key appears in a log record"),
        (_Unbounded, search_engines.check_count_is_honoured, "results for count=1 (at most count)"),
        (_Crashing, search_engines.check_malformed_bodies_are_bad_response, "raised ValueError (cannot decode)"),
    ],
    ids=["key in a message", "key in a log", "count ignored", "not a SearchError"],
)
async def test_a_check_fails_a_driver_that_breaks_its_rule(
    engine: type[SearxngEngine], check: Check, fragment: str
) -> None:
    async with searxng_harness(engine) as harness:
        with pytest.raises(AssertionError) as caught:
            await check(harness)
    assert fragment in str(caught.value)
