"""Assembly: the runtime's services built from a configuration, and their start and stop.

:class:`Services` is what the HTTP edge serves and what ``chorus datasets`` uses without a server:
provider drivers, skillsets, search engines, the knowledge service (catalog + vector store +
embedder), the parked-turn store, the registry, the pipeline and the Responses API on it. Building validates every driver's
settings and every reference (a :class:`ConfigError` names the key); nothing touches the network
until :meth:`Services.start`.
"""

from __future__ import annotations

import logging
from typing import Any

from chorus.contract.config import Config, DatasetConfig, convert
from chorus.contract.errors import ChorusError, ConfigError, PluginError
from chorus.contract.providers import ProviderDriver
from chorus.contract.search import SearchEngineDriver
from chorus.plugins.manager import PluginManager
from chorus.runtime.access import Access
from chorus.runtime.defaults import data_dir as resolve_data_dir
from chorus.runtime.keys import KeyRing
from chorus.runtime.knowledge.service import Embedder, IngestSummary, Knowledge
from chorus.runtime.observe import Observer
from chorus.runtime.pipeline import Pipeline
from chorus.runtime.registry import Registry
from chorus.runtime.responses.service import Responses
from chorus.runtime.skillsets import Skillset, build_skillsets
from chorus.storage.catalog import Catalog
from chorus.storage.state import State, open_state

log = logging.getLogger("chorus")


def build_providers(config: Config, pm: PluginManager) -> list[ProviderDriver]:
    """Instantiate one driver per ``[[providers]]`` table, validated by the driver's settings type."""
    providers: list[ProviderDriver] = []
    for i, raw in enumerate(config.providers):
        try:
            driver_cls = pm.driver("providers", str(raw["driver"]))
        except PluginError as exc:
            raise ConfigError(f"providers[{i}]: {exc}") from None
        settings = convert(raw, driver_cls.settings_type, f"providers[{i}]")
        try:
            providers.append(driver_cls(settings))
        except ConfigError as exc:
            raise ConfigError(f"providers[{i}]: {exc}") from None
    return providers


def build_knowledge(config: Config, pm: PluginManager, registry: Registry, catalog: Catalog) -> Knowledge:
    """The configured vector store driver over the state's catalog, and (optionally) the embedder.

    With a shared state (``[state] url``) the built-in ``sqlite`` vector store would keep every
    instance's chunks in its own data dir (a silent split brain), so it is refused unless
    ``[state] allow_local_vector_store = true`` says this deployment is one instance.
    """
    directory = resolve_data_dir(config.data_dir)
    raw = dict(config.vector_store) or {"driver": "sqlite"}
    raw.setdefault("driver", "sqlite")
    if config.state.url is not None and raw["driver"] == "sqlite" and not config.state.allow_local_vector_store:
        raise ConfigError(
            "vector_store: with [state] url set, chunks must live where every instance can read them, but the "
            "built-in 'sqlite' store keeps them in this instance's data dir. Set [vector_store] driver = \"pgvector\" "
            "with a url (PostgreSQL with the pgvector extension; pip install chorus-vectorstore-pgvector) or "
            "driver = \"qdrant\" with a url (pip install chorus-vectorstore-qdrant), or, for a single instance, "
            "[state] allow_local_vector_store = true"
        )
    try:
        store_cls = pm.driver("vector_stores", str(raw["driver"]))
    except PluginError as exc:
        raise ConfigError(f"vector_store: {exc}") from None
    store = store_cls(convert(raw, store_cls.settings_type, "vector_store"), directory)
    embedder: Embedder | None = None
    if config.knowledge.embedding_model:
        found = registry.find_model(config.knowledge.embedding_model)
        if found is None:
            raise ConfigError(f"knowledge.embedding_model {config.knowledge.embedding_model!r} matches no provider")
        provider, model = found

        async def embed(texts: list[str]) -> list[list[float]]:
            response = await provider.embed(texts, model)
            return [item["embedding"] for item in sorted(response["data"], key=lambda d: d.get("index", 0))]

        embedder = embed
    return Knowledge(catalog, store, config.knowledge, embedder)


def build_search_engines(config: Config, pm: PluginManager) -> dict[str, SearchEngineDriver]:
    """One driver per ``[[search_engines]]`` table, validated by the driver's settings type."""
    engines: dict[str, SearchEngineDriver] = {}
    for i, raw in enumerate(config.search_engines):
        try:
            cls = pm.driver("search_engines", str(raw["driver"]))
        except PluginError as exc:
            raise ConfigError(f"search_engines[{i}]: {exc}") from None
        engine = cls(convert(raw, cls.settings_type, f"search_engines[{i}]"))
        engines[engine.id] = engine
    return engines


def build_keyring(config: Config) -> KeyRing:
    """The key ring of every workspace's configured keys."""
    ring = KeyRing()
    for workspace in config.workspaces:
        for key in workspace.api_keys:
            ring.add(key, workspace.id)
    return ring


class Services:
    """Everything a configuration runs on, built once; :meth:`start` and :meth:`aclose` in order."""

    def __init__(self, config: Config, pm: PluginManager | None = None, *, tracer_provider: Any = None) -> None:
        """``tracer_provider``: an OpenTelemetry ``TracerProvider`` to trace with (default: per the
        ``OTEL_*`` environment; tests pass one with an in-memory exporter)."""
        self.config = config
        self.observer = Observer.from_config(config, tracer_provider=tracer_provider)
        self.pm = pm = pm or PluginManager()
        self.providers = build_providers(config, pm)
        self.skillsets: list[Skillset] = build_skillsets(config.skillsets, pm)
        self.registry = Registry.from_config(config, self.providers, build_keyring(config), self.skillsets)
        self.state: State = open_state(config, resolve_data_dir(config.data_dir))
        self.knowledge = self.registry.knowledge = build_knowledge(config, pm, self.registry, self.state.catalog)
        self.search_engines = self.registry.search_engines = build_search_engines(config, pm)
        self.pipeline = Pipeline(pm, self.registry, config.server, self.state.turns, self.observer.tracing)
        #: retries, fallbacks and circuits per provider (for metrics)
        self.failover_stats = self.registry.failover.stats
        self.responses = Responses(self.pipeline, self.state.responses, self.knowledge)
        self.observer.circuit_states = self.failover_stats.circuits
        self.access = self.registry.access = self.pipeline.access = Access(
            config, self.registry.keyring, self.registry.workspaces, self.state.access, self.state.signals)

    async def start(self) -> None:
        """Start providers, skillsets, engines, knowledge and the turn store; sync config datasets."""
        for provider in self.providers:
            try:
                await provider.start()
            except ChorusError as exc:
                log.error("provider %s failed to start: %s", provider.id, exc.message)
                raise RuntimeError(f"provider {provider.id!r} failed to start: {exc.message}") from None
        for skillset in self.skillsets:
            await skillset.start()
        for engine in self.search_engines.values():
            await engine.start()
        await self.state.start()
        await self.access.start()
        await self.knowledge.start()
        for dataset in self.config.datasets:
            await self.sync_dataset(dataset)

    async def sync_dataset(self, dataset: DatasetConfig) -> IngestSummary | None:
        """Sync a config dataset once per deployment: the instance that takes its lock ingests,
        the others skip it and serve what the shared state holds (``None``)."""
        async with self.state.try_lock(f"dataset-sync:{dataset.workspace}/{dataset.id}") as mine:
            if not mine:
                log.info("dataset %s: another instance is syncing it; serving what it stores", dataset.id)
                return None
            summary = await self.knowledge.sync_dataset(dataset)
        log.info("dataset %s: %d added, %d updated, %d unchanged, %d removed, %d failed",
                 dataset.id, summary.added, summary.updated, summary.unchanged, summary.removed, len(summary.failed))
        for name, reason in summary.failed:
            log.warning("dataset %s: %s not ingested: %s", dataset.id, name, reason)
        return summary

    async def aclose(self) -> None:
        """Stop everything in reverse order; a failing provider close is logged, the rest still close."""
        self.observer.close()
        await self.knowledge.aclose()
        await self.access.aclose()
        await self.state.aclose()
        for engine in self.search_engines.values():
            await engine.aclose()
        for skillset in self.skillsets:
            await skillset.aclose()
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("provider %s failed to close", provider.id)
