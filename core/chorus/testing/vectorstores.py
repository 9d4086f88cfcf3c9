"""A conformance kit for vector store drivers (:class:`chorus.vectorstores.VectorStoreDriver`).

Every check here is a plain coroutine function, ``await check(make)``, that drives one behaviour
of the driver contract through the public methods only and raises :class:`AssertionError` with a
message naming what went wrong. :data:`CHECKS` lists the behaviours every driver must have;
:data:`SCORING_CHECKS` the score conventions of the built-in drivers (dense-only hits score their
cosine similarity, hybrid hits ``Σ 1/(settings.rrf_k + rank)``), for drivers that score the same
way. Wire them into pytest (or any runner) with a factory and one parametrized test::

    from chorus.testing.vectorstores import CHECKS, Check, DriverFactory

    @pytest.fixture
    async def make_store(tmp_path):
        fresh = itertools.count()

        def build(*, data: str | None = None, dense: bool = True) -> MyStore:
            return MyStore(MyStoreSettings(dense=dense), tmp_path / (data or f"fresh-{next(fresh)}"))

        async with DriverFactory(build) as make:   # closes the drivers it started
            yield make

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_conformance(check: Check, make_store: DriverFactory[MyStore]) -> None:
        await check(make_store)

A driver's tests provide a :class:`StoreFactory` (:class:`DriverFactory` makes one from a function
that builds an unstarted driver): ``await make()`` returns a *started* driver over fresh, empty
data with the driver's default settings, and

* ``data="name"``: the data kept under that name instead, so a driver made again with the same
  name (after a check closed the first) sees what the first one wrote (restart persistence);
* ``dense=False``: the driver configured to keep no chunk vectors (lexical search only);
* ``start=False``: the driver without :meth:`~VectorStoreDriver.start` called.

The factory closes every driver it started when the test ends, including ones a check already
closed, so ``aclose`` must be safe to call twice. A driver's own settings (batch sizes, a
server's address) belong in ``build``; a check can also be run again with another factory, e.g.
one giving small write batches, and the test can then inspect the drivers it made. Checks use
workspaces ``acme``, ``globex`` and ``nobody`` and datasets ``docs``, ``a``, ``b`` and ``c``.

Driver-specific behaviour (exact lexical score values, failure injection, crash recovery, work
kept off the event loop with :class:`chorus.testing.offloop.OffLoop`, storage internals) stays in
the driver's own tests; :func:`chunk`, :func:`chunks`, :data:`FILLER`, :func:`ids`, the filter
helpers (:func:`load_filter_docs`, :func:`assert_filter_selects`, :func:`assert_filter_refused`)
and :func:`kill_mid_write` (a child process SIGKILLed in the middle of a write) serve those.
Nothing here imports pytest or measures time.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from chorus.contract.documents import Chunk, SearchHit
from chorus.contract.errors import InvalidRequest
from chorus.contract.vectorstores import VectorStoreDriver
from chorus.testing._expect import expect as _expect

__all__ = [
    "CHECKS", "FILLER", "FILTER_CASES", "FILTER_DOCS", "INVALID_FILTERS", "SCORING_CHECKS", "WEIRD_QUERIES",
    "Check", "DriverFactory", "StoreFactory", "assert_filter_refused", "assert_filter_selects", "chunk", "chunks",
    "ids", "kill_mid_write", "load_filter_docs",
]


class StoreFactory(Protocol):
    """Makes drivers for the checks; see the module docstring for what each argument means."""

    def __call__(self, *, data: str | None = None, dense: bool = True,
                 start: bool = True) -> Awaitable[VectorStoreDriver]: ...


Check = Callable[[StoreFactory], Awaitable[None]]
D = TypeVar("D", bound=VectorStoreDriver)
E = TypeVar("E", bound=BaseException)


class DriverFactory(Generic[D]):
    """Makes drivers with ``build(**options)`` (a new, *unstarted* driver) and starts them.

    ``await factory(start=True, **options)`` passes ``options`` to ``build``; used as a
    :class:`StoreFactory` they are ``data`` and ``dense``. Leaving ``async with`` (or
    :meth:`aclose`) closes every driver it started, in order.
    """

    def __init__(self, build: Callable[..., D]) -> None:
        self.build = build
        self.started: list[D] = []

    async def __call__(self, *, start: bool = True, **options: Any) -> D:
        store = self.build(**options)
        if start:
            await store.start()
            self.started.append(store)
        return store

    async def aclose(self) -> None:
        """Close the drivers started so far (each even if closing another failed; the first error is raised)."""
        started, self.started = self.started, []
        errors = []
        for store in started:
            try:
                await store.aclose()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


# -- building blocks for driver tests -------------------------------------------------------------

#: Unrelated office sentences: background chunks that give lexical statistics something to weigh.
FILLER = (
    "The quarterly report covers revenue and staffing in the northern offices.",
    "Our cafeteria menu changes every Monday with seasonal vegetables.",
    "Parking permits are renewed at the front desk before the end of March.",
    "The printer on the third floor needs toner and a new paper tray.",
    "Holiday schedules are published in the shared calendar each autumn.",
    "Security badges must be worn visibly inside the building at all times.",
)


def chunk(file_id: str, index: int, text: str, *, workspace: str = "acme", dataset: str = "docs",
          vector: list[float] | None = None, **extra: Any) -> Chunk:
    """A chunk with id ``"<file_id>:<index>"``; ``extra`` sets the other :class:`Chunk` fields."""
    return Chunk(id=f"{file_id}:{index}", workspace=workspace, dataset=dataset, file_id=file_id, index=index,
                 text=text, vector=vector, **extra)


def chunks(file_id: str, texts: Iterable[str], **kw: Any) -> list[Chunk]:
    """One chunk per text, indexed from 0; ``kw`` as for :func:`chunk` (applied to every chunk)."""
    return [chunk(file_id, i, t, **kw) for i, t in enumerate(texts)]


async def ids(store: VectorStoreDriver, query: str, *, workspace: str = "acme", datasets: list[str] | None = None,
              **kw: Any) -> list[str]:
    """The chunk ids ``store.search`` returns (best first); ``datasets`` defaults to ``["docs"]``."""
    return [h.chunk.id for h in await store.search(workspace, datasets or ["docs"], query, **kw)]


# -- assertion helpers (explicit raises: the checks must not depend on pytest or on ``assert``) ----


def _equal(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def _close(got: float, want: float, what: str, *, rel: float = 1e-6, abs_tol: float = 0.0) -> None:
    if not math.isclose(got, want, rel_tol=rel, abs_tol=abs_tol):
        raise AssertionError(f"{what}: got {got!r}, expected about {want!r}")


async def _raises(kind: type[E], awaitable: Awaitable[Any], what: str) -> E:
    try:
        await awaitable
    except kind as exc:
        return exc
    except Exception as exc:
        raise AssertionError(f"{what}: expected {kind.__name__}, got {exc!r}") from exc
    raise AssertionError(f"{what}: expected {kind.__name__}, nothing was raised")


def _fail_all(failures: list[str], what: str) -> None:
    if failures:
        raise AssertionError(f"{what} ({len(failures)} failed):\n  " + "\n  ".join(failures))


# -- crash tests ----------------------------------------------------------------------------------


async def kill_mid_write(code: str, *args: str, ready: str = "inside", timeout: float = 60.0) -> None:
    """Run ``python -c code *args`` and SIGKILL it once it prints the line ``ready``: a crash in the
    middle of a write. The child must print ``ready`` inside the write and then keep it open (e.g.
    sleep). ``timeout`` only guards against a child that never gets there; it is not a bound on speed.
    POSIX only.
    """
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None  # for the type checker: stdout is a pipe
        line = await asyncio.wait_for(child.stdout.readline(), timeout)
        _equal(line.decode().strip(), ready, "the child's first line (its stderr tells why it is not the marker)")
        child.send_signal(signal.SIGKILL)
        _equal(await asyncio.wait_for(child.wait(), timeout), -signal.SIGKILL, "the killed child's return code")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


# -- basics ---------------------------------------------------------------------------------------


async def check_not_started_raises(make: StoreFactory) -> None:
    """Before ``start``, every method raises ``RuntimeError``."""
    store = await make(start=False)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "count": lambda: store.count("acme", "docs"),
        "search": lambda: store.search("acme", ["docs"], "anything"),
        "replace_file": lambda: store.replace_file("acme", "docs", "f", chunks("f", ["text"])),
        "delete_file": lambda: store.delete_file("acme", "docs", "f"),
        "delete_dataset": lambda: store.delete_dataset("acme", "docs"),
    }
    for name, call in calls.items():
        await _raises(RuntimeError, call(), f"{name} on a driver that was not started")


async def check_empty_store_answers_before_any_write(make: StoreFactory) -> None:
    """A new store counts, searches and deletes (nothing) before anything was written."""
    store = await make()
    _equal(await store.count("acme", "docs"), 0, "count of an empty store")
    _equal(await ids(store, "anything", vector=[1.0, 0.0]), [], "hybrid search of an empty store")
    _equal(await store.delete_file("acme", "docs", "f"), 0, "delete_file on an empty store")
    _equal(await store.delete_dataset("acme", "docs"), 0, "delete_dataset on an empty store")


async def check_replace_delete_count(make: StoreFactory) -> None:
    """``replace_file`` replaces a file's whole chunk set; deletes return and counts report chunk numbers."""
    store = await make()
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["alpha one", "alpha two", "alpha three"]))
    await store.replace_file("acme", "docs", "f2", chunks("f2", ["beta one"]))
    _equal(await store.count("acme", "docs"), 4, "count of a dataset of 3 + 1 chunks")
    _equal(await store.count("acme", "docs", "f1"), 3, "count of a file of 3 chunks")
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["gamma one", "gamma two"]))
    _equal(await store.count("acme", "docs", "f1"), 2, "count after replacing 3 chunks by 2")
    _equal(await ids(store, "alpha"), [], "search for the replaced chunks")
    _equal(sorted(await ids(store, "gamma")), ["f1:0", "f1:1"], "search for the replacing chunks")
    await store.replace_file("acme", "docs", "f1", [])
    _equal(await store.count("acme", "docs", "f1"), 0, "count after replacing a file by no chunks")
    _equal(await store.delete_file("acme", "docs", "f2"), 1, "delete_file of a 1-chunk file")
    _equal(await store.delete_file("acme", "docs", "f2"), 0, "delete_file of a deleted file")
    _equal(await ids(store, "beta"), [], "search for a deleted file's chunks")
    await store.replace_file("acme", "docs", "f2", chunks("f2", ["beta again"]))
    _equal(await ids(store, "beta"), ["f2:0"], "search for a file written again after its deletion")
    await store.replace_file("acme", "docs", "f3", chunks("f3", ["delta", "delta"]))
    _equal(await store.delete_dataset("acme", "docs"), 3, "delete_dataset of 1 + 2 chunks")
    _equal(await store.count("acme", "docs"), 0, "count after delete_dataset")
    _equal(await ids(store, "delta beta"), [], "search after delete_dataset")


async def check_chunk_fields_round_trip(make: StoreFactory) -> None:
    """Every chunk field comes back from search unchanged; title and headings are searchable."""
    store = await make()
    original = chunk("f1", 0, "Install on Linux with apt.", title="Guide", headings=["Install", "Linux — Debian"],
                     url="https://example.com/guide", source="docs/guide.md", start=10, end=36,
                     attributes={"lang": "en", "year": 2024, "draft": False, "score": 1.5})
    await store.replace_file("acme", "docs", "f1", [original])
    hits = await store.search("acme", ["docs"], "install linux")
    _equal([h.chunk for h in hits], [original], "the chunk a search returns")
    _expect(hits[0].score > 0, f"a matching chunk's score should be positive, got {hits[0].score!r}")
    _equal(await ids(store, "debian"), ["f1:0"], "search for a word of the headings only")
    _equal(await ids(store, "guide"), ["f1:0"], "search for a word of the title only")


async def check_persists_across_restart(make: StoreFactory) -> None:
    """Chunks and vectors written before ``aclose`` are found by a driver started on the same data."""
    store = await make(data="persisted")
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["persistent zebra"], vector=[1.0, 0.0]))
    await store.aclose()
    store = await make(data="persisted")
    _equal(await ids(store, "zebra"), ["f1:0"], "lexical search after a restart")
    _equal(await ids(store, "", vector=[1.0, 0.1]), ["f1:0"], "dense search after a restart")
    _equal(await store.count("acme", "docs"), 1, "count after a restart")


async def check_rejects_bad_chunk_sets(make: StoreFactory) -> None:
    """A chunk of another file, dataset or workspace is a ``ValueError``, a repeated index an error;
    either way the file keeps its previous chunks and the store keeps working."""
    store = await make()
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["original text"], vector=[1.0, 0.0]))
    for bad, what in ((chunk("f2", 0, "x"), "another file"), (chunk("f1", 0, "x", dataset="other"), "another dataset"),
                      (chunk("f1", 0, "x", workspace="globex"), "another workspace")):
        await _raises(ValueError, store.replace_file("acme", "docs", "f1", [bad]),
                      f"replace_file of acme/docs/f1 with a chunk of {what}")
    repeated = [chunk("f1", 0, "new gamma"), chunk("f1", 1, "new delta"), chunk("f1", 1, "new epsilon")]
    await _raises(Exception, store.replace_file("acme", "docs", "f1", repeated),
                  "replace_file with two chunks of the same index")
    _equal(await ids(store, "original"), ["f1:0"], "lexical search for the previous chunks after refused writes")
    _equal(await ids(store, "new gamma delta epsilon"), [], "search for the refused chunks")
    _equal(await ids(store, "", vector=[1.0, 0.0]), ["f1:0"], "dense search for the previous chunks")
    _equal(await store.count("acme", "docs", "f1"), 1, "count after refused writes")
    await store.replace_file("acme", "docs", "f1", chunks("f1", ["fresh text"]))
    _equal(await ids(store, "fresh"), ["f1:0"], "search after a write that follows refused ones")


# -- lexical ranking ------------------------------------------------------------------------------


async def check_bm25_ranks_matching_and_term_rich_chunks_first(make: StoreFactory) -> None:
    """Lexical ranking is BM25-like: term frequency and more matching terms win, inflections match,
    hits come best first."""
    store = await make()
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await store.replace_file("acme", "docs", "guide", chunks("guide", [
        "Kubernetes is mentioned once here among many other words about unrelated office topics today.",
        "Kubernetes clusters: deploy Kubernetes pods, scale Kubernetes nodes, upgrade Kubernetes.",
        "Rotate the database credentials every ninety days using the vault.",
    ]))
    _equal((await ids(store, "kubernetes"))[:2], ["guide:1", "guide:0"], "the term-rich chunk first")
    _equal((await ids(store, "how do I rotate database credentials?"))[:1], ["guide:2"], "a question's best match")
    _equal((await ids(store, "vault credentials printer"))[:1], ["guide:2"], "more matching terms beat fewer")
    _equal((await ids(store, "rotating credential"))[:1], ["guide:2"], "another inflection (stemming)")
    scores = [h.score for h in await store.search("acme", ["docs"], "kubernetes")]
    _equal(scores, sorted(scores, reverse=True), "scores best first")


async def check_rare_terms_outweigh_common_ones(make: StoreFactory) -> None:
    """A term in few chunks weighs more than one in every chunk (IDF)."""
    store = await make()
    common = [f"the report mentions the budget in section {i}" for i in range(12)]
    await store.replace_file("acme", "docs", "common", chunks("common", common))
    await store.replace_file("acme", "docs", "rare", chunks("rare", ["the zeppelin hangar report"]))
    _equal((await ids(store, "report zeppelin"))[:1], ["rare:0"], "the chunk holding the rare term first")
    top = (await ids(store, "budget report"))[:1]
    _expect(bool(top) and top[0].startswith("common:"), f"'budget report' should rank a common:* first, got {top}")


async def check_title_and_headings_are_weighted(make: StoreFactory) -> None:
    """A term in a chunk's title and headings outweighs the same term once in body text."""
    store = await make()
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))
    await store.replace_file("acme", "docs", "a", [chunk("a", 0, "Some text that mentions backups in passing, once.")])
    await store.replace_file("acme", "docs", "b", [chunk("b", 0, "Some text about the schedule and retention.",
                                                          title="Backups", headings=["Backups"])])
    _equal((await ids(store, "backups"))[:1], ["b:0"], "the chunk titled with the term first")


async def check_case_diacritics_and_inflections_fold(make: StoreFactory) -> None:
    """Queries match regardless of case, diacritics and inflection."""
    store = await make()
    await store.replace_file("acme", "docs", "f", chunks("f", ["Crème brûlée at the Café", "Deploying services"]))
    _equal(await ids(store, "CREME BRULEE cafe"), ["f:0"], "upper case without diacritics")
    _equal(await ids(store, "deployed service"), ["f:1"], "other inflections")


async def check_operator_words_are_plain_terms(make: StoreFactory) -> None:
    """Query syntax of the underlying engine (quotes, AND/OR/NOT/NEAR, parentheses) is plain text."""
    store = await make()
    await store.replace_file("acme", "docs", "f", chunks("f", ["foo bar", "and or not near", "unrelated"]))
    _equal((await ids(store, '"foo" AND (bar'))[:1], ["f:0"], "search for '\"foo\" AND (bar'")
    _equal(await ids(store, "NOT near"), ["f:1"], "search for 'NOT near'")


#: Queries that must never raise; the ones containing ``foo`` must find ``foo and bar live here`` first.
WEIRD_QUERIES = (
    '"foo" AND (bar', "*", "foo*", "NEAR(foo bar", "-foo", "^foo", "title:foo", "'", '"', "()", "AND OR NOT",
    "foo\x00bar", "{title text}: foo", "foo + bar", "ｆｏｏ", "日本語のテキスト", "a" * 5000, " ".join(["foo"] * 500),
    "", "   ", "!!!", "_", "foo_bar",
)


async def check_weird_queries_never_raise(make: StoreFactory) -> None:
    """No query text (:data:`WEIRD_QUERIES`: syntax, control characters, huge or empty) raises."""
    store = await make()
    texts = ["foo and bar live here", "日本語のテキスト", "AND OR NOT"]
    await store.replace_file("acme", "docs", "f", chunks("f", texts))
    failures = []
    for query in WEIRD_QUERIES:
        try:
            hits = await store.search("acme", ["docs"], query)
        except Exception as exc:
            failures.append(f"{query[:60]!r} raised {exc!r}")
            continue
        if "foo" in query.lower() and (not hits or hits[0].chunk.id != "f:0"):
            failures.append(f"{query[:60]!r} should find f:0 first, got {[h.chunk.id for h in hits]}")
    _fail_all(failures, "weird queries")


# -- tenancy and scoping --------------------------------------------------------------------------


async def check_workspaces_never_see_each_other(make: StoreFactory) -> None:
    """Searches, counts and deletes of one workspace never touch another's chunks, even with the
    same dataset and file names."""
    store = await make()

    async def write_globex() -> None:
        await store.replace_file("globex", "docs", "f1", chunks("f1", ["globex public roadmap"], workspace="globex",
                                                              vector=[0.0, 1.0]))

    await store.replace_file("acme", "docs", "f1", chunks("f1", ["acme secret roadmap"], vector=[1.0, 0.0]))
    await write_globex()
    for workspace, other in (("acme", "globex"), ("globex", "acme")):
        hits = await store.search(workspace, ["docs"], "secret public roadmap", vector=[0.7, 0.7], k=10)
        _expect(bool(hits), f"{workspace}'s hybrid search found nothing")
        _equal({h.chunk.workspace for h in hits}, {workspace}, f"workspaces of {workspace}'s hybrid hits")
        _expect(all(other not in h.chunk.text for h in hits), f"{workspace}'s hybrid search returned {other}'s text")
        hits = await store.search(workspace, ["docs"], "", vector=[1.0, 1.0], k=10)
        _equal([h.chunk.workspace for h in hits], [workspace], f"workspaces of {workspace}'s dense hits")
        hits = await store.search(workspace, ["docs"], "roadmap", filters={"type": "ne", "key": "x", "value": 1})
        _equal([h.chunk.workspace for h in hits], [workspace], f"workspaces of {workspace}'s filtered hits")
        _equal(await store.count(workspace, "docs"), 1, f"count of {workspace}/docs")
    _equal(await ids(store, "secret", workspace="globex"), [], "globex searching acme's word")
    _equal(await store.delete_file("globex", "docs", "f1"), 1, "globex deleting its f1")
    _equal(await ids(store, "roadmap"), ["f1:0"], "acme's search after globex deleted its f1")
    _equal(await ids(store, "roadmap", workspace="globex"), [], "globex's search after deleting its f1")
    _equal(await store.delete_dataset("globex", "docs"), 0, "globex deleting its emptied docs")
    _equal(await store.count("acme", "docs"), 1, "acme's count after globex's deletes")
    await write_globex()
    _equal(await store.count("globex", "docs"), 1, "globex's count after writing f1 again")
    _equal(await store.delete_dataset("globex", "docs"), 1, "globex deleting its docs")
    _equal(await store.delete_file("globex", "docs", "f1"), 0, "globex deleting f1 of its deleted docs")
    _equal(await store.count("acme", "docs"), 1, "acme's count after globex deleted its docs")
    _equal(await ids(store, "roadmap"), ["f1:0"], "acme's search after globex deleted its docs")
    _equal(await store.search("nobody", ["docs"], "roadmap", vector=[1.0, 0.0]), [], "a workspace with no data")


async def check_search_is_scoped_to_datasets(make: StoreFactory) -> None:
    """Searches see only the datasets asked for (repeats allowed, none or unknown: nothing)."""
    store = await make()
    await store.replace_file("acme", "a", "f1", chunks("f1", ["shared topic apples"], dataset="a", vector=[1.0, 0.0]))
    await store.replace_file("acme", "b", "f1", chunks("f1", ["shared topic pears"], dataset="b", vector=[0.9, 0.1]))

    async def datasets(names: list[str], query: str, vector: list[float] | None = None) -> list[str]:
        return [h.chunk.dataset for h in await store.search("acme", names, query, vector=vector)]

    _equal(await datasets(["a"], "shared topic"), ["a"], "lexical search of dataset a")
    _equal(await datasets(["b"], "", [1.0, 0.0]), ["b"], "dense search of dataset b")
    _equal(sorted(await datasets(["a", "b", "a"], "shared topic", [1.0, 0.0])), ["a", "b"],
           "hybrid search of datasets a, b, a")
    _equal(await datasets([], "shared"), [], "search of no dataset")
    _equal(await datasets(["c"], "shared"), [], "search of an unknown dataset")
    _equal(await store.delete_dataset("acme", "a"), 1, "delete_dataset a")
    _equal(await datasets(["a", "b"], "shared", [1.0, 0.0]), ["b"], "search of a and b after deleting a")


# -- filters --------------------------------------------------------------------------------------

#: The files :func:`load_filter_docs` writes (one chunk each, ``common policy text <name>``) and their attributes.
FILTER_DOCS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("en-2020", {"lang": "en", "year": 2020, "score": 1.5, "public": True}),
    ("en-2024", {"lang": "en", "year": 2024, "score": 3.0, "public": False}),
    ("de-2022", {"lang": "de", "year": 2022, "score": 2.0}),
    ("fr-none", {"lang": "fr", "year": "unknown"}),
    ("bare", {}),
)

#: Filters over :data:`FILTER_DOCS` and the files each selects.
FILTER_CASES: tuple[tuple[Any, set[str]], ...] = (
    ({"type": "eq", "key": "lang", "value": "en"}, {"en-2020", "en-2024"}),
    ({"type": "ne", "key": "lang", "value": "en"}, {"de-2022", "fr-none", "bare"}),
    ({"type": "gt", "key": "year", "value": 2020}, {"en-2024", "de-2022"}),
    ({"type": "gte", "key": "year", "value": 2020}, {"en-2020", "en-2024", "de-2022"}),
    ({"type": "lt", "key": "year", "value": 2024}, {"en-2020", "de-2022"}),
    ({"type": "lte", "key": "score", "value": 2}, {"en-2020", "de-2022"}),
    ({"type": "eq", "key": "score", "value": 2}, {"de-2022"}),
    ({"type": "eq", "key": "year", "value": 2022.0}, {"de-2022"}),
    ({"type": "eq", "key": "public", "value": True}, {"en-2020"}),
    ({"type": "eq", "key": "public", "value": False}, {"en-2024"}),
    ({"type": "in", "key": "lang", "value": ["de", "fr"]}, {"de-2022", "fr-none"}),
    ({"type": "in", "key": "year", "value": [2020, "unknown", 1999]}, {"en-2020", "fr-none"}),
    ({"type": "nin", "key": "lang", "value": ["de", "fr"]}, {"en-2020", "en-2024", "bare"}),
    ({"type": "in", "key": "lang", "value": []}, set()),
    ({"type": "nin", "key": "lang", "value": []}, {name for name, _ in FILTER_DOCS}),
    ({"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                 {"type": "gte", "key": "year", "value": 2021}]}, {"en-2024"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "lang", "value": "de"},
                                {"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                                            {"type": "lt", "key": "year", "value": 2021}]}]},
     {"de-2022", "en-2020"}),
    ({"type": "or", "filters": [{"type": "in", "key": "lang", "value": []},
                                {"type": "eq", "key": "lang", "value": "fr"}]}, {"fr-none"}),
    ({"type": "and", "filters": [{"type": "nin", "key": "lang", "value": []},
                                 {"type": "eq", "key": "lang", "value": "fr"}]}, {"fr-none"}),
    ({"type": "eq", "key": "lang", "value": "en' OR 1=1 --"}, set()),
    ({"type": "eq", "key": "la'ng) OR 1=1 --", "value": "en"}, set()),
    ({"type": "eq", "key": "lang.x", "value": "en"}, set()),
    ({"type": "eq", "key": "missing", "value": "x"}, set()),
)

#: Filters every driver refuses with a 400 ``InvalidRequest`` whose ``param`` is ``"filters"``.
INVALID_FILTERS: tuple[Any, ...] = (
    {"type": "like", "key": "a", "value": 1},
    {"type": "eq", "key": "a"},
    {"type": "eq", "key": "", "value": 1},
    {"type": "eq", "key": 'a"b', "value": 1},
    {"type": "eq", "key": "a\\b", "value": 1},
    {"type": "eq", "key": "k" * 65, "value": 1},
    {"type": "eq", "key": "a", "value": {"x": 1}},
    {"type": "eq", "key": "a", "value": None},
    {"type": "eq", "key": "a", "value": float("nan")},
    {"type": "in", "key": "a", "value": "notalist"},
    {"type": "in", "key": "a", "value": [[1]]},
    {"type": "in", "key": "a", "value": list(range(1000))},
    {"type": "and", "filters": []},
    {"type": "or"},
    {"type": "eq", "key": "a", "value": 1, "extra": 2},
    ["not", "an", "object"],
    {"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [
        {"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [{"type": "and", "filters": [
            {"type": "and", "filters": [{"type": "eq", "key": "a", "value": 1}]}]}]}]}]}]}]}]}]},
)


async def load_filter_docs(store: VectorStoreDriver) -> None:
    """Write :data:`FILTER_DOCS` into ``acme/docs``, with 2-dimensional vectors near ``[1, 0]``."""
    for n, (name, attrs) in enumerate(FILTER_DOCS):
        await store.replace_file("acme", "docs", name, [chunk(name, 0, f"common policy text {name}", attributes=attrs,
                                                              vector=[1.0, n / 10])])


async def assert_filter_selects(store: VectorStoreDriver, spec: Any, expected: set[str]) -> None:
    """Lexical, dense and hybrid searches of :data:`FILTER_DOCS` with ``spec`` find exactly the files ``expected``."""
    searches: dict[str, tuple[str, list[float] | None]] = {
        "lexical": ("policy", None), "dense": ("", [1.0, 0.0]), "hybrid": ("policy", [1.0, 0.0])}
    for mode, (query, vector) in searches.items():
        hits = await store.search("acme", ["docs"], query, vector=vector, k=10, filters=spec)
        _equal({h.chunk.file_id for h in hits}, expected, f"{mode} search filtered by {spec!r}")


async def assert_filter_refused(store: VectorStoreDriver, spec: Any) -> None:
    """A search with ``spec`` raises a 400 ``InvalidRequest`` whose ``param`` is ``"filters"``."""
    exc = await _raises(InvalidRequest, store.search("acme", ["docs"], "policy", filters=spec), f"filter {spec!r}")
    _equal((exc.status_code, exc.param), (400, "filters"), f"status and param of the error for {spec!r}")


async def _each(cases: Iterable[Any], check: Callable[[Any], Awaitable[None]], what: str) -> None:
    failures = []
    for case in cases:
        try:
            await check(case)
        except AssertionError as exc:
            failures.append(str(exc))
        except Exception as exc:
            failures.append(f"{case!r} raised {exc!r}")
    _fail_all(failures, what)


async def check_filters(make: StoreFactory) -> None:
    """Every filter of :data:`FILTER_CASES` selects its files, in lexical, dense and hybrid searches."""
    store = await make()
    await load_filter_docs(store)
    await _each(FILTER_CASES, lambda case: assert_filter_selects(store, *case), "filters")


async def check_keys_with_dots_are_one_attribute(make: StoreFactory) -> None:
    """A filter key ``a.b`` names the attribute ``"a.b"``, not a path into ``a``."""
    store = await make()
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "dotted", attributes={"a.b": 1, "a": {"b": 2}})])
    _equal(await ids(store, "dotted", filters={"type": "eq", "key": "a.b", "value": 1}), ["f:0"], "a.b == 1")
    _equal(await ids(store, "dotted", filters={"type": "eq", "key": "a.b", "value": 2}), [], "a.b == 2")


async def check_invalid_filters(make: StoreFactory) -> None:
    """Every filter of :data:`INVALID_FILTERS` is a 400 ``InvalidRequest`` with ``param="filters"``."""
    store = await make()
    await load_filter_docs(store)
    await _each(INVALID_FILTERS, lambda spec: assert_filter_refused(store, spec), "invalid filters")


async def check_selective_filter_on_dense(make: StoreFactory) -> None:
    """A filter matching one chunk far down the dense ranking still finds it."""
    store = await make()
    many = [chunk("f", i, f"row {i}", vector=[1.0, i / 1000], attributes={"keep": i == 250}) for i in range(300)]
    await store.replace_file("acme", "docs", "f", many)
    found = await ids(store, "", vector=[1.0, 0.0], k=3, filters={"type": "eq", "key": "keep", "value": True})
    _equal(found, ["f:250"], "dense search for the one chunk with keep == true")


# -- dense and hybrid -----------------------------------------------------------------------------

_HYBRID_QUERY, _HYBRID_VECTOR = "refund policy anvils", [1.0, 0.0, 0.0]


async def _hybrid_store(make: StoreFactory) -> VectorStoreDriver:
    store = await make()
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER, vector=[0.0, 0.0, 1.0]))
    await store.replace_file("acme", "docs", "f", [
        chunk("f", 0, "Refund policy for damaged anvils", vector=[-0.1, 1.0, 0.0]),       # lexical only
        chunk("f", 1, "Returning broken goods", vector=[1.0, 0.05, 0.0]),                  # dense only
        chunk("f", 2, "Refund policy for broken goods and anvils", vector=[0.9, 0.1, 0.0]),  # both
    ])
    return store


async def check_hybrid_fuses_rankings(make: StoreFactory) -> None:
    """With a query vector, the lexical and dense rankings are fused: a chunk good in both wins,
    a chunk found by only one is still returned."""
    store = await _hybrid_store(make)
    lexical = await ids(store, _HYBRID_QUERY)
    dense = await ids(store, "", vector=_HYBRID_VECTOR)
    _expect(lexical[:1] in (["f:0"], ["f:2"]) and "f:1" not in lexical,
            f"lexical ranking should start with f:0 or f:2 and lack f:1, got {lexical}")
    _equal(dense[:2], ["f:1", "f:2"], "the dense ranking's top 2")
    hybrid = await ids(store, _HYBRID_QUERY, vector=_HYBRID_VECTOR, k=3)
    _equal(hybrid[:1], ["f:2"], "the hybrid ranking's best")
    _equal(set(hybrid), {"f:0", "f:1", "f:2"}, "the hybrid ranking's top 3")


async def check_vector_edge_cases(make: StoreFactory) -> None:
    """A query vector of another dimension, all zeros or not finite is ignored (lexical only);
    chunks without vectors are found lexically."""
    store = await make()
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "lexical words", vector=[1.0, 0.0]),
                                                   chunk("f", 1, "no vector here words")])
    for vector in ([1.0, 0.0, 0.0], [0.0, 0.0], [float("nan"), 1.0]):
        _equal(sorted(await ids(store, "words", vector=vector)), ["f:0", "f:1"], f"hybrid search with {vector}")
        _equal(await ids(store, "", vector=vector), [], f"dense search with {vector}")
    _equal(await ids(store, "", vector=[0.5, 0.5]), ["f:0"], "dense search finds only the chunk with a vector")


async def check_dense_disabled_stores_no_vectors(make: StoreFactory) -> None:
    """With dense search turned off, vectors are not kept and searches are lexical only."""
    store = await make(dense=False)
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "text", vector=[1.0, 0.0])])
    _equal(await ids(store, "", vector=[1.0, 0.0]), [], "dense search with dense turned off")
    _equal(await ids(store, "text", vector=[1.0, 0.0]), ["f:0"], "hybrid search with dense turned off")


async def check_dense_ranking_follows_writes(make: StoreFactory) -> None:
    """Dense search sees replaced vectors and forgets deleted ones."""
    store = await make()
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[1.0, 0.0])])
    _equal(await ids(store, "", vector=[1.0, 0.0]), ["f:0"], "dense search after the first write")
    await store.replace_file("acme", "docs", "f", [chunk("f", 0, "a", vector=[0.0, 1.0]),
                                                   chunk("f", 1, "b", vector=[1.0, 0.0])])
    _equal(await ids(store, "", vector=[1.0, 0.0]), ["f:1", "f:0"], "dense search after a replace")
    await store.delete_file("acme", "docs", "f")
    _equal(await ids(store, "", vector=[1.0, 0.0]), [], "dense search after delete_file")


async def check_large_k(make: StoreFactory) -> None:
    """``k`` beyond the number of chunks returns every chunk once; ``k=0`` returns nothing."""
    store = await make()
    await store.replace_file("acme", "docs", "f", [chunk("f", i, f"word{i} common", vector=[1.0, i / 1200])
                                                   for i in range(1200)])
    found = await ids(store, "common", vector=[1.0, 0.0], k=100_000)
    _equal((len(found), len(set(found))), (1200, 1200), "hits and distinct hits of a hybrid search with k=100000")
    _equal(await store.search("acme", ["docs"], "common", k=0), [], "search with k=0")


# -- concurrency ----------------------------------------------------------------------------------


async def check_searches_while_writing_see_whole_files(make: StoreFactory, *, versions: int = 30) -> None:
    """Searches running while a file is rewritten ``versions - 1`` times see exactly one whole version."""
    store = await make()
    await store.replace_file("acme", "docs", "filler", chunks("filler", FILLER))

    def version(n: int) -> list[Chunk]:
        return [chunk("f", i, f"versioned content part {i}", attributes={"v": n}, vector=[1.0, i / 50])
                for i in range(40 + n % 3)]

    def versions_of(hits: list[SearchHit]) -> set[int]:
        return {h.chunk.attributes["v"] for h in hits}

    await store.replace_file("acme", "docs", "f", version(0))
    done = False
    seen: set[int] = set()

    async def writer() -> None:
        nonlocal done
        try:
            for n in range(1, versions):
                await store.replace_file("acme", "docs", "f", version(n))
        finally:
            done = True

    async def reader() -> None:
        while not done:
            hits = await store.search("acme", ["docs"], "versioned content", k=100)
            found = versions_of(hits)
            _equal(len(found), 1, f"number of versions one lexical search saw ({sorted(found)})")
            _equal(len(hits), 40 + min(found) % 3, f"chunks of version {min(found)} one search found")
            seen.update(found)
            hybrid = await store.search("acme", ["docs"], "versioned", vector=[1.0, 0.0], k=5)
            _expect(len(versions_of(hybrid)) == 1,
                    f"a hybrid search should see one version, saw {sorted(versions_of(hybrid))}")

    await asyncio.gather(writer(), reader(), reader())
    _expect(len(seen) > 1, f"readers should see more than one version, saw {sorted(seen)}")
    last = versions_of(await store.search("acme", ["docs"], "versioned", k=50))
    _equal(last, {versions - 1}, "the version found after the writes")


def _version(n: int) -> list[Chunk]:
    return [chunk("f", i, f"version {n} part {i} shared words", attributes={"v": n}) for i in range(3 + n)]


async def check_concurrent_writers_of_one_file_converge(make: StoreFactory) -> None:
    """Concurrent ``replace_file`` calls of one file leave exactly one writer's whole version."""
    store = await make()
    await asyncio.gather(*(store.replace_file("acme", "docs", "f", _version(n)) for n in range(8)))
    hits = await store.search("acme", ["docs"], "shared words", k=100)
    found = {h.chunk.attributes["v"] for h in hits}
    _equal(len(found), 1, f"number of versions left by concurrent writers ({sorted(found)})")
    (winner,) = found
    _equal(len(hits), 3 + winner, f"chunks found of the winning version {winner}")
    _equal(await store.count("acme", "docs", "f"), 3 + winner, f"count of the winning version {winner}")


async def check_concurrent_replace_and_delete_converge(make: StoreFactory) -> None:
    """A ``replace_file`` racing a ``delete_file`` of the same file leaves the file whole or deleted."""
    store = await make()
    await store.replace_file("acme", "docs", "f", _version(0))
    await asyncio.gather(store.replace_file("acme", "docs", "f", _version(1)), store.delete_file("acme", "docs", "f"))
    hits = await store.search("acme", ["docs"], "shared words", k=100)
    _expect(len(hits) in (0, 4), f"the file should be deleted or hold version 1's 4 chunks, found {len(hits)}")
    _equal(await store.count("acme", "docs", "f"), len(hits), "count after the race")


# -- scoring conventions of the built-in drivers --------------------------------------------------


async def check_hybrid_scores_are_reciprocal_rank_fusion(make: StoreFactory) -> None:
    """A hybrid hit scores ``Σ 1/(settings.rrf_k + rank)`` over the rankings it is in, ranks from 1."""
    store = await _hybrid_store(make)
    rrf_k = getattr(store.settings, "rrf_k", None)
    if not isinstance(rrf_k, int | float):
        raise AssertionError(
            f"the driver's settings should have a numeric rrf_k, got {rrf_k!r}")
    lexical = await ids(store, _HYBRID_QUERY)
    _expect("f:2" in lexical, f"the lexical ranking should hold f:2, got {lexical}")
    (best,) = await store.search("acme", ["docs"], _HYBRID_QUERY, vector=_HYBRID_VECTOR, k=1)
    _equal(best.chunk.id, "f:2", "the hybrid ranking's best")
    want = 1 / (rrf_k + lexical.index("f:2") + 1) + 1 / (rrf_k + 2)  # f:2 is second in the dense ranking
    _close(best.score, want, "the best hybrid hit's score")


async def check_dense_scores_are_cosine_similarities(make: StoreFactory) -> None:
    """A dense-only hit scores the cosine similarity of its vector and the query vector."""
    store = await _hybrid_store(make)
    (best,) = await store.search("acme", ["docs"], "", vector=[2.0, 0.1, 0.0], k=1)
    _equal(best.chunk.id, "f:1", "the dense ranking's best")
    _close(best.score, 1.0, "the score of a vector nearly parallel to the query", rel=0, abs_tol=1e-3)
    hits = await store.search("acme", ["docs"], "", vector=[0.0, 1.0, 0.0], k=20)
    scores = {h.chunk.id: h.score for h in hits}
    _close(scores.get("f:0", math.nan), 1.0 / math.hypot(-0.1, 1.0), "the cosine score of f:0", abs_tol=1e-5)
    _close(scores.get("f:2", math.nan), 0.1 / math.hypot(0.9, 0.1), "the cosine score of f:2", abs_tol=1e-5)


#: The behaviours every driver must have, in a stable order.
CHECKS: tuple[Check, ...] = (
    check_not_started_raises,
    check_empty_store_answers_before_any_write,
    check_replace_delete_count,
    check_chunk_fields_round_trip,
    check_persists_across_restart,
    check_rejects_bad_chunk_sets,
    check_bm25_ranks_matching_and_term_rich_chunks_first,
    check_rare_terms_outweigh_common_ones,
    check_title_and_headings_are_weighted,
    check_case_diacritics_and_inflections_fold,
    check_operator_words_are_plain_terms,
    check_weird_queries_never_raise,
    check_workspaces_never_see_each_other,
    check_search_is_scoped_to_datasets,
    check_filters,
    check_keys_with_dots_are_one_attribute,
    check_invalid_filters,
    check_selective_filter_on_dense,
    check_hybrid_fuses_rankings,
    check_vector_edge_cases,
    check_dense_disabled_stores_no_vectors,
    check_dense_ranking_follows_writes,
    check_large_k,
    check_searches_while_writing_see_whole_files,
    check_concurrent_writers_of_one_file_converge,
    check_concurrent_replace_and_delete_converge,
)

#: Optional: the scores of the built-in drivers (cosine for dense-only hits, reciprocal rank
#: fusion with ``settings.rrf_k`` for hybrid ones); run them when a driver scores the same way.
SCORING_CHECKS: tuple[Check, ...] = (
    check_hybrid_scores_are_reciprocal_rank_fusion,
    check_dense_scores_are_cosine_similarities,
)
