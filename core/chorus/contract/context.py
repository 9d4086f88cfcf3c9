"""Everything a hook receives: the request context and the types it refers to.

* who is asking: :class:`Workspace`, and the read-only :class:`Registry` of what it may use
  (providers, bots, skillsets, search engines, knowledge);
* what the ``model`` selector resolved to: :class:`Target`;
* the request while it runs: :class:`RequestContext`, its :class:`Source` list, its
  :class:`CallBudget`, and the :class:`Runtime` that runs it.

These types refer to each other (a context has a target, whose provider takes a context), so they
live in one module; the runtime's concrete classes implement the protocols. Public paths:
``chorus.context``, ``chorus.registry``, ``chorus.targets``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from chorus.contract.observe import Observation

if TYPE_CHECKING:
    import httpx

    from chorus.contract.config import BotConfig, Price, SkillsetConfig
    from chorus.contract.documents import SearchHit
    from chorus.contract.schemas import ChatCompletionRequest
    from chorus.contract.search import SearchEngineDriver
    from chorus.contract.tools import ToolDriver, ToolSpec


class Provider(Protocol):
    """A model provider as requests use it (:class:`chorus.providers.ProviderDriver` implements it)."""

    @property
    def id(self) -> str: ...

    def advertised_models(self) -> list[str]: ...

    def serves(self, model: str) -> bool: ...

    def price(self, model: str) -> Price | None: ...

    async def embed(self, inputs: list[str], model: str, *, dimensions: int | None = None) -> dict[str, Any]: ...

    async def complete(self, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]: ...

    def stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[dict[str, Any]]: ...


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant as seen by request handling."""

    id: str
    name: str = ""


class Skillset(Protocol):
    """A configured ``[[skillsets]]`` entry: its tools and the egress-guarded client they share."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> SkillsetConfig: ...

    @property
    def http(self) -> httpx.AsyncClient: ...

    def specs(self) -> list[ToolSpec]:
        """Every tool, in configuration order."""
        ...

    def owner(self, name: str) -> ToolDriver | None:
        """The driver running tool ``name``, or ``None``."""
        ...


class Knowledge(Protocol):
    """Retrieval over the workspace's datasets (the configured vector store)."""

    async def search(self, workspace: str, datasets: list[str], query: str, *, k: int = 8,
                     filters: dict[str, Any] | None = None, min_score: float = 0.0) -> list[SearchHit]:
        """Best chunks of ``datasets`` (ids of ``workspace``) for ``query``, best first."""
        ...


class Registry(Protocol):
    """Providers, workspaces, bots, skillsets, search engines and knowledge, built once at startup."""

    @property
    def providers(self) -> Mapping[str, Provider]: ...

    @property
    def workspaces(self) -> Mapping[str, Workspace]: ...

    @property
    def search_engines(self) -> Mapping[str, SearchEngineDriver]: ...

    @property
    def knowledge(self) -> Knowledge | None: ...

    def find_model(self, name: str) -> tuple[Provider, str] | None:
        """Resolve ``<provider>/<model>`` or a bare model name to ``(provider, upstream model)``."""
        ...

    def bot(self, workspace: str, bot_id: str) -> BotConfig | None:
        """The bot ``bot_id`` of ``workspace``; another workspace's bot is ``None`` too."""
        ...

    def bots(self, workspace: str) -> list[BotConfig]:
        """All bots of ``workspace`` in configuration order."""
        ...

    def skillsets_of(self, bot: BotConfig) -> Sequence[Skillset]:
        """The bot's skillsets, in the order the bot lists them (same workspace only)."""
        ...


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved selector: which provider and upstream model to call, and for which bot.

    ``fallbacks`` are further ``(provider, upstream model)`` candidates, tried in order when the
    primary still fails after its retries (a bot's ``fallback_models``, a ``model/name=a/x,b/y`` chain).
    """

    selector: str
    kind: str
    provider: Provider
    model: str
    bot: BotConfig | None = None
    extra: dict[str, Any] = {}
    fallbacks: tuple[tuple[Provider, str], ...] = ()


class Source(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A piece of retrieved context the answer may cite, numbered in the system prompt."""

    text: str
    title: str = ""
    url: str = ""
    id: str = ""
    metadata: dict[str, Any] = {}


SOURCES_HEADER = (
    "Sources (answer from them when relevant and cite a source with its number in square "
    "brackets, e.g. [1]):"
)


def render_sources(sources: Sequence[Source]) -> str:
    """The numbered sources block layered into a bot's system prompt (``docs/layering.md``).

    ``[n] title (url)`` then the text, one blank line apart, after :data:`SOURCES_HEADER`. Provider
    drivers that build their own prompt shape (``chorus-provider-llamacpp``'s completion style) use
    it to find the block in the system message and lay the sources out their own way.
    """
    blocks = [SOURCES_HEADER]
    for number, source in enumerate(sources, start=1):
        heading = f"[{number}]"
        if source.title:
            heading += f" {source.title}"
        if source.url:
            heading += f" ({source.url})"
        blocks.append(f"{heading}\n{source.text.strip()}")
    return "\n\n".join(blocks)


class Runtime(Protocol):
    """The runtime running a request, as far as a plugin may call back into it (teams do)."""

    @property
    def max_team_depth(self) -> int:
        """How deep bots may delegate to team members (``server.max_team_depth``)."""
        ...

    async def complete(self, ctx: RequestContext) -> dict[str, Any]:
        """Run ``ctx`` as a non-streaming request through the whole pipeline; the ``chat.completion``."""
        ...


class CallBudget:
    """Model calls allowed for one request, shared by a bot and every team member it asks."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def spend(self) -> None:
        self.used += 1


class LedgerEntry:
    """Token usage and cost of the model calls of one request to one ``provider/model``."""

    __slots__ = ("cached_tokens", "calls", "cost_nanos", "input_tokens", "model", "output_tokens", "provider")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cost_nanos = 0  # USD x 1e9


class Ledger:
    """Every model call of one client request, hidden tool steps and team members included.

    The runtime adds each upstream call's usage here once (team members share their parent's
    ledger); when the request ends it becomes the request's usage records, its token and spend
    counts. Metrics, traces and logs read the same totals.
    """

    __slots__ = ("entries", "started")

    def __init__(self) -> None:
        self.started = time.time()
        self.entries: dict[tuple[str, str], LedgerEntry] = {}

    def add(self, provider: str, model: str, input_tokens: int, output_tokens: int, cached_tokens: int,
            cost_nanos: int) -> None:
        entry = self.entries.get((provider, model))
        if entry is None:
            entry = self.entries[(provider, model)] = LedgerEntry(provider, model)
        entry.calls += 1
        entry.input_tokens += input_tokens
        entry.output_tokens += output_tokens
        entry.cached_tokens += cached_tokens
        entry.cost_nanos += cost_nanos

    @property
    def tokens(self) -> int:
        return sum(e.input_tokens + e.output_tokens for e in self.entries.values())

    @property
    def cost_nanos(self) -> int:
        return sum(e.cost_nanos for e in self.entries.values())


class RequestContext:
    """Everything known about one request while it runs.

    Plugins may read every attribute and keep their own per-request data in :attr:`state`
    (namespaced by plugin name). :attr:`usage` accumulates token usage across every model call.
    :attr:`observation` collects the facts metrics, logs and traces report (:mod:`chorus.contract.observe`).
    :attr:`ledger` holds every model call's usage and cost per ``provider/model`` (a plugin that
    runs sub-requests gives them the parent's ledger, as teams do); :attr:`key_id` is the API key's
    id (``key_...`` for managed keys, ``cfg_...`` for config-file keys).
    """

    __slots__ = (
        "budget",
        "completion_id",
        "created",
        "deadline",
        "depth",
        "include_usage",
        "key_id",
        "ledger",
        "legacy_functions",
        "observation",
        "registry",
        "request",
        "request_id",
        "runtime",
        "sources",
        "state",
        "stream",
        "target",
        "upstream",
        "upstream_headers",
        "usage",
        "workspace",
    )

    def __init__(
        self,
        *,
        request_id: str,
        workspace: Workspace,
        registry: Registry,
        request: ChatCompletionRequest,
        observation: Observation | None = None,
    ) -> None:
        self.request_id = request_id
        self.workspace = workspace
        self.registry = registry
        self.request = request
        self.target: Target | None = None
        self.upstream: str | None = None   # "<provider>/<model>" of the last upstream that answered
        self.stream = bool(request.stream)
        options = request.stream_options
        self.include_usage = bool(self.stream and isinstance(options, dict) and options.get("include_usage"))
        self.created = int(time.time())
        self.completion_id = "chatcmpl-" + request_id.removeprefix("req_")
        self.sources: list[Source] = []
        self.usage: dict[str, Any] | None = None
        self.state: dict[str, Any] = {}
        self.deadline: float | None = None
        self.legacy_functions = False
        self.runtime: Runtime | None = None  # set by the runtime when the request starts
        self.budget: CallBudget | None = None
        self.depth = 0                     # 0 for the client's request, +1 per team delegation
        #: What the request's metrics, log line and trace are made of (team members share their lead's).
        self.observation = observation if observation is not None else Observation("chat", time.perf_counter())
        #: Headers provider drivers send with this request's upstream calls (W3C trace context when
        #: tracing is on; set by the runtime before each model call). ``None``: none.
        self.upstream_headers: dict[str, str] | None = None
        self.key_id: str | None = None     # the API key's id (managed keys, or "cfg_..." for config keys)
        self.ledger = Ledger()             # every model call's usage and cost (team members share it)

    def field(self, name: str) -> Any:
        """The value of a request field a plugin declared (``request_fields``); ``None`` when not sent."""
        value = getattr(self.request, name, None)
        return None if value is msgspec.UNSET else value

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        """Add one model call's ``usage`` object to the running total."""
        if not usage:
            return
        if self.usage is None:
            self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                self.usage[key] += value
