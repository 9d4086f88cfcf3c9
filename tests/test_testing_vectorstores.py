"""chorus.testing.vectorstores: the kit's checks are well formed and catch drivers that break the contract."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chorus.contract.documents import SearchHit
from chorus.testing import vectorstores as kit
from chorus_plugins.sqlite_store import SqliteVectorStore, SqliteVectorStoreSettings

ALL_CHECKS = kit.CHECKS + kit.SCORING_CHECKS


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_each_check_is_a_documented_coroutine_function(check: kit.Check) -> None:
    assert inspect.iscoroutinefunction(check), f"{check.__name__} is not an async function"
    assert check.__name__.startswith("check_"), check.__name__
    assert (check.__doc__ or "").strip(), f"{check.__name__} has no docstring"
    first = next(iter(inspect.signature(check).parameters))
    assert first == "make", f"{check.__name__} does not take the factory first"


def test_every_check_is_listed_once() -> None:
    listed = [check.__name__ for check in ALL_CHECKS]
    assert len(set(listed)) == len(listed), "a check is listed twice"
    defined = {name for name, value in vars(kit).items() if name.startswith("check_") and inspect.isfunction(value)}
    assert defined == set(listed), f"defined but not listed: {sorted(defined - set(listed))}"


def test_the_kit_never_imports_pytest() -> None:
    code = "import sys, chorus.testing.vectorstores; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- the checks fail broken drivers, with a message that says what broke ---------------------------


class _IgnoresFilters(SqliteVectorStore):
    async def search(self, workspace: str, datasets: list[str], query: str, **kw: Any) -> list[SearchHit]:
        kw.pop("filters", None)
        return await super().search(workspace, datasets, query, **kw)


class _CountsEveryWorkspace(SqliteVectorStore):
    async def count(self, workspace: str, dataset: str, file_id: str | None = None) -> int:
        count = super().count
        return sum([await count(w, dataset, file_id) for w in ("acme", "globex")])


@pytest.fixture
async def broken(tmp_path: Path) -> AsyncIterator[Any]:
    """``await broken(cls)``: the kit's factory over a broken subclass of the sqlite store."""
    factories: list[kit.DriverFactory[SqliteVectorStore]] = []

    def factory(cls: type[SqliteVectorStore]) -> kit.DriverFactory[SqliteVectorStore]:
        def build(*, data: str | None = None, dense: bool = True) -> SqliteVectorStore:
            return cls(SqliteVectorStoreSettings(dense=dense), tmp_path / f"{cls.__name__}-{data or len(factories)}")

        factories.append(kit.DriverFactory(build))
        return factories[-1]

    yield factory
    for made in factories:
        await made.aclose()


async def test_a_driver_ignoring_filters_fails_check_filters(broken: Any) -> None:
    with pytest.raises(AssertionError) as info:
        await kit.check_filters(broken(_IgnoresFilters))
    message = str(info.value)
    assert message.startswith("filters (")
    assert "lexical search filtered by {'type': 'eq', 'key': 'lang', 'value': 'en'}: got {" in message


async def test_a_driver_leaking_counts_fails_the_tenancy_check(broken: Any) -> None:
    with pytest.raises(AssertionError, match="count of acme/docs: got 2, expected 1"):
        await kit.check_workspaces_never_see_each_other(broken(_CountsEveryWorkspace))


async def test_driver_factory_starts_and_closes_its_drivers(tmp_path: Path) -> None:
    def build(*, data: str | None = None, dense: bool = True) -> SqliteVectorStore:
        return SqliteVectorStore(SqliteVectorStoreSettings(dense=dense), tmp_path / (data or "x"))

    async with kit.DriverFactory(build) as make:
        unstarted = await make(start=False)
        started = await make(dense=False)
        assert make.started == [started] and not started.settings.dense
        await started.count("acme", "docs")
        with pytest.raises(RuntimeError):
            await unstarted.count("acme", "docs")
    assert make.started == []
    with pytest.raises(RuntimeError):
        await started.count("acme", "docs")


async def test_kill_mid_write_reports_a_child_that_never_gets_there() -> None:
    with pytest.raises(AssertionError, match="the child's first line"):
        await kit.kill_mid_write("print('finished early')")
