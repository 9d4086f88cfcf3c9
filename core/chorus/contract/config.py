"""Configuration: TOML typed with msgspec, strict (unknown keys are errors naming the key).

``${VAR}`` in any string value is replaced from the environment at load time (``$${`` writes a
literal ``${``); a missing variable is a :class:`~chorus.errors.ConfigError` naming the key that
referenced it. Provider tables are validated later by their driver's settings type (see
:mod:`chorus.providers`), so a driver owns its own keys.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, dataclass_transform

import msgspec

from chorus.contract.errors import ConfigError
from chorus.contract.secrets import Secret, dec_hook

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# msgspec Structs inherit ``frozen`` (and ``forbid_unknown_fields``) from their base at runtime, but
# type checkers model Struct through PEP 681 ``dataclass_transform``, which reads ``frozen`` per
# class: a plain ``class X(Strict)`` would look non-frozen and mypy reports "Non-frozen dataclass
# cannot inherit from a frozen dataclass" on every settings class (here, in plugins and in contrib).
# Declaring Strict itself a transform whose subclasses are frozen by default states what msgspec
# does, once; at runtime the decorator only sets ``Strict.__dataclass_transform__``.
@dataclass_transform(frozen_default=True, field_specifiers=(msgspec.field,))
class Strict(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base for our own configuration: unknown keys are rejected, instances are immutable."""


class ServerConfig(Strict):
    """``[server]``: how ``chorus serve`` listens and request limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 * 1024 * 1024
    max_tool_steps: Annotated[int, msgspec.Meta(ge=0)] = 8
    keepalive_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    max_team_depth: Annotated[int, msgspec.Meta(ge=0)] = 3
    # where hidden agent steps wait for a client's tool results (see chorus.turns)
    parked_turns: Literal["state", "sqlite", "memory"] = "state"  # "sqlite": the old name of "state"
    parked_turns_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    playground: bool = True  # the web playground at ``/`` (static files; false removes the routes)
    #: "text": lines with time, level and logger; "json": one JSON object per line, plus one line per
    #: request (``chorus serve --log-format`` overrides it).
    log_format: Literal["text", "json"] = "text"
    # keys of the admin API (``/admin/v1``), in ``sha256:<hex>`` form only (``chorus keys new --admin``)
    admin_keys: list[Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]] = []
    # the window of ``rpm``/``tpm`` limits in seconds (60: per minute; tests and trials shorten it)
    limit_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0


class MetricsConfig(Strict):
    """``[metrics]``: Prometheus metrics (docs/observability.md)."""

    enabled: bool = True
    #: Serve ``/metrics`` on this port (its own small server, on ``host``) instead of the API's port.
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    host: str = "127.0.0.1"
    #: Require ``Authorization: Bearer <token>`` on ``/metrics`` (default: open, for an internal scraper).
    bearer_token: Secret | None = None


class TracingConfig(Strict):
    """``[tracing]``: OpenTelemetry traces, exported where the standard ``OTEL_*`` environment says."""

    #: Record message content (prompts, answers, tool arguments and results) on spans.
    record_content: bool = False


class Limits(Strict, omit_defaults=True):
    """Requests and tokens per limit window (``[server] limit_window_seconds``, a minute by default)."""

    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None


#: Budget periods: fixed UTC windows from the Unix epoch ("month" is 30 days, not a calendar month).
BUDGET_PERIODS: dict[str, int] = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400}


class Budget(Strict):
    """A spend budget in USD per period (``hour``, ``day``, ``week``, ``month`` = 30 days)."""

    amount: Annotated[float, msgspec.Meta(ge=0)]
    period: Literal["hour", "day", "week", "month"] = "month"


class Price(Strict):
    """What a model costs, in USD per million tokens (``cached_input`` defaults to ``input``)."""

    input: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    output: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    cached_input: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def cost_nanos(self, input_tokens: int, output_tokens: int, cached_tokens: int) -> int:
        """The cost of one call in nano-USD (USD per million tokens = nano-USD per thousandth token)."""
        cached = min(max(cached_tokens, 0), input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return round((input_tokens - cached) * self.input * 1000 + cached * cached_price * 1000
                     + output_tokens * self.output * 1000)


class WorkspaceConfig(Strict):
    """``[[workspaces]]``: a tenant. Its keys select it; everything it owns is invisible to others."""

    id: str
    name: str = ""
    api_keys: list[str] = []
    limits: Limits = Limits()     # requests / tokens per window for the whole workspace (every key)
    budget: Budget | None = None  # spend budget of the whole workspace


class BotParams(Strict, omit_defaults=True):
    """``params`` on a bot: request defaults. Any value the request sets wins."""

    temperature: float | msgspec.UnsetType = msgspec.UNSET
    top_p: float | msgspec.UnsetType = msgspec.UNSET
    max_tokens: int | msgspec.UnsetType = msgspec.UNSET
    max_completion_tokens: int | msgspec.UnsetType = msgspec.UNSET
    stop: str | list[str] | msgspec.UnsetType = msgspec.UNSET
    n: int | msgspec.UnsetType = msgspec.UNSET
    seed: int | msgspec.UnsetType = msgspec.UNSET
    presence_penalty: float | msgspec.UnsetType = msgspec.UNSET
    frequency_penalty: float | msgspec.UnsetType = msgspec.UNSET
    logit_bias: dict[str, float] | msgspec.UnsetType = msgspec.UNSET
    logprobs: bool | msgspec.UnsetType = msgspec.UNSET
    top_logprobs: int | msgspec.UnsetType = msgspec.UNSET
    response_format: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    reasoning_effort: str | msgspec.UnsetType = msgspec.UNSET
    parallel_tool_calls: bool | msgspec.UnsetType = msgspec.UNSET


class SkillsetConfig(Strict):
    """``[[skillsets]]``: a named set of server-side tools a bot of the same workspace may use.

    ``tools`` tables are validated by their driver's settings type (``chorus.tools``).
    """

    id: str
    workspace: str
    description: str = ""
    egress_allow: list[str] = []
    tools: list[dict[str, Any]] = []
    tool_timeout: float = 30.0
    max_concurrency: int = 4


class KnowledgeConfig(Strict):
    """``[knowledge]``: ingestion and embedding settings shared by every dataset."""

    embedding_model: str | None = None  # "<provider>/<model>" served through /v1/embeddings
    chunk_chars: int = 1200
    chunk_overlap: int = 150
    max_file_bytes: int = 64 * 1024 * 1024


class DatasetConfig(Strict):
    """``[[datasets]]``: a dataset ingested from files at startup (its id is its vector store id)."""

    id: str
    workspace: str
    name: str = ""
    description: str = ""
    sources: list[str] = []


class RetrievalConfig(Strict):
    """``retrieval`` on a bot: how much context to retrieve for each request."""

    top_k: int = 5
    min_score: float = 0.0
    max_context_chars: int = 6000


class CitationsConfig(Strict):
    """``citations`` on a bot: how an answer is tied to its sources.

    Answers that cite with ``[n]`` markers always get annotations for them. With ``attribute``, an
    answer that carries no marker is attributed by overlap instead: each sentence is credited to
    the source holding the largest share of its content words, when that share is at least
    ``threshold`` (see ``docs/knowledge.md``). Meant for models that write no markers (small local ones).
    """

    attribute: bool = False
    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.6


class SearchOptions(Strict):
    """``search`` on a bot: which engine, and how the bot uses it."""

    engine: str
    mode: Literal["auto", "always"] = "auto"   # auto: a web_search tool; always: search before the model
    results: int = 5
    fetch_pages: int = 0            # fetch and extract the text of the top N result pages
    max_page_chars: int = 4000
    egress_allow: list[str] = []    # hosts or CIDRs page fetching may reach despite the egress guard
    required: bool = False          # fail the request when the engine fails (default: answer without search)


class BotConfig(Strict):
    """``[[bots]]``: an agent that looks like a model (``bot/id=<id>``)."""

    id: str
    workspace: str
    model: str
    #: ``<provider>/<model>`` (or bare) models tried in order when ``model`` still fails after its retries.
    fallback_models: list[str] = []
    name: str = ""
    description: str = ""
    backstory: str = ""
    params: BotParams = BotParams()
    skillsets: list[str] = []
    max_tool_steps: int | None = None
    datasets: list[str] = []
    retrieval: RetrievalConfig = RetrievalConfig()
    perplexity_citations: bool = False
    citations: CitationsConfig = CitationsConfig()
    search: SearchOptions | None = None
    team: list[str] = []
    max_model_calls: int = 24       # per-request budget over the bot and every team member it asks


class StateConfig(Strict):
    """``[state]``: where Chorus keeps what it stores (files, dataset sync state, parked turns).

    Without ``url``: SQLite files in the data dir (one machine, any number of workers). With
    ``url = "postgresql://..."``: one PostgreSQL schema that every instance of a deployment shares.
    """

    url: Secret | None = None
    #: Optional ``redis://`` URL: shared counters and notifications go through Redis first (the state
    #: store carries them, more slowly, without it or while it is down).
    redis_url: Secret | None = None
    schema: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = "chorus"
    pool_min: Annotated[int, msgspec.Meta(ge=0)] = 1
    pool_max: Annotated[int, msgspec.Meta(ge=1)] = 10
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    command_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: "auto": apply missing migrations at startup; "check": refuse to start until
    #: ``chorus state migrate`` has run.
    migrate: Literal["auto", "check"] = "auto"
    #: Allow the built-in ``sqlite`` vector store with ``url`` set (chunks then stay in this
    #: instance's data dir: only for a single instance).
    allow_local_vector_store: bool = False


class Config(Strict):
    """The whole configuration file."""

    data_dir: str | None = None
    server: ServerConfig = ServerConfig()
    providers: list[dict[str, Any]] = []
    workspaces: list[WorkspaceConfig] = []
    skillsets: list[SkillsetConfig] = []
    knowledge: KnowledgeConfig = KnowledgeConfig()
    vector_store: dict[str, Any] = {}
    datasets: list[DatasetConfig] = []
    search_engines: list[dict[str, Any]] = []
    bots: list[BotConfig] = []
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string of ``value`` (recursively) from ``env``."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{path or 'config'}: environment variable {name} is not set "
                    f"(referenced as ${{{name}}})"
                )
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def convert(raw: Any, type_: type, where: str) -> Any:
    """``msgspec.convert`` with a :class:`ConfigError` that names the location and key."""
    try:
        return msgspec.convert(raw, type_, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`").replace("`$`", "the top level")
        if "`$[" in message:
            message = message.replace("`$[", "`[")
        raise ConfigError(f"{where}: {message}") from None


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "config") -> Config:
    """Validate an already-parsed TOML mapping into a :class:`Config`."""
    expanded = expand_env(dict(data), os.environ if env is None else env)
    config: Config = convert(expanded, Config, source)
    _check_references(config, source)
    _check_team_cycles(config, source)
    return config


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    base = file.resolve().parent
    for dataset in data.get("datasets") or []:
        if isinstance(dataset, dict) and isinstance(dataset.get("sources"), list):
            dataset["sources"] = [
                str(base / s) if isinstance(s, str) and not Path(s).is_absolute() and "${" not in s else s
                for s in dataset["sources"]
            ]
    return parse_config(data, env=env, source=str(file))


def _check_references(config: Config, source: str) -> None:
    state = config.state
    if state.url is not None and not state.url.get().startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{source}: state.url must be a postgresql:// URL")
    if state.redis_url is not None and not state.redis_url.get().startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{source}: state.redis_url must be a redis://, rediss:// or unix:// URL")
    if state.pool_min > state.pool_max:
        raise ConfigError(f"{source}: state.pool_min ({state.pool_min}) is above state.pool_max ({state.pool_max})")
    """Cross-object checks: unique ids, known workspaces, well-formed key digests."""
    _unique(source, "providers", [str(p.get("id", "")) for p in config.providers])
    _unique(source, "workspaces", [w.id for w in config.workspaces])
    _unique(source, "bots", [b.id for b in config.bots])
    for i, provider in enumerate(config.providers):
        for key in ("id", "driver"):
            if not isinstance(provider.get(key), str) or not provider.get(key):
                raise ConfigError(f"{source}: providers[{i}].{key} is required")
    _unique(source, "skillsets", [s.id for s in config.skillsets])
    _unique(source, "datasets", [(d.workspace, d.id) for d in config.datasets])
    workspaces = {w.id for w in config.workspaces}
    skillsets = {s.id: s for s in config.skillsets}
    for i, skillset in enumerate(config.skillsets):
        if skillset.workspace not in workspaces:
            raise ConfigError(f"{source}: skillsets[{i}].workspace names unknown workspace {skillset.workspace!r}")
        for j, tool in enumerate(skillset.tools):
            for key in ("name", "driver"):
                if not isinstance(tool.get(key), str) or not tool.get(key):
                    raise ConfigError(f"{source}: skillsets[{i}].tools[{j}].{key} is required")
    for i, dataset in enumerate(config.datasets):
        if dataset.workspace not in workspaces:
            raise ConfigError(f"{source}: datasets[{i}].workspace names unknown workspace {dataset.workspace!r}")
    _unique(source, "search_engines", [str(e.get("id", "")) for e in config.search_engines])
    for i, engine in enumerate(config.search_engines):
        for key in ("id", "driver"):
            if not isinstance(engine.get(key), str) or not engine.get(key):
                raise ConfigError(f"{source}: search_engines[{i}].{key} is required")
    engines = {str(e.get("id")) for e in config.search_engines}
    bots = {(b.workspace, b.id) for b in config.bots}
    for i, bot in enumerate(config.bots):
        if bot.workspace not in workspaces:
            raise ConfigError(f"{source}: bots[{i}].workspace names unknown workspace {bot.workspace!r}")
        if bot.search is not None and bot.search.engine not in engines:
            raise ConfigError(f"{source}: bots[{i}].search.engine names unknown search engine {bot.search.engine!r}")
        for member in bot.team:
            if (bot.workspace, member) not in bots:
                raise ConfigError(f"{source}: bots[{i}].team names unknown bot {member!r} (in workspace {bot.workspace!r})")
        for name in bot.skillsets:
            found = skillsets.get(name)
            if found is None or found.workspace != bot.workspace:
                raise ConfigError(
                    f"{source}: bots[{i}].skillsets names unknown skillset {name!r} (in workspace {bot.workspace!r})"
                )
    for i, ws in enumerate(config.workspaces):
        for j, key in enumerate(ws.api_keys):
            if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", key):
                raise ConfigError(
                    f"{source}: workspaces[{i}].api_keys[{j}] must be 'sha256:' and 64 lowercase hex digits"
                )
            if not key:
                raise ConfigError(f"{source}: workspaces[{i}].api_keys[{j}] is empty")


def _check_team_cycles(config: Config, source: str) -> None:
    """A team that contains itself, directly or through members, is an error naming the cycle."""
    teams = {(b.workspace, b.id): [(b.workspace, m) for m in b.team] for b in config.bots}

    def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
        if node in path:
            cycle = " -> ".join(n[1] for n in [*path[path.index(node):], node])
            raise ConfigError(f"{source}: team cycle: {cycle}")
        for member in teams.get(node, []):
            visit(member, [*path, node])

    for node in teams:
        visit(node, [])


def _unique(source: str, table: str, ids: list[Any]) -> None:
    seen: set[Any] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ConfigError(f"{source}: {table}[{i}].id {ident!r} is used twice")
        seen.add(ident)
