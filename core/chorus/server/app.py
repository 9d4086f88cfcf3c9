"""The Litestar application: wiring of configuration, plugins, providers and controllers."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from chorus.server.routes.chat import ClientGone, chat_completions
from chorus.server.routes.embeddings import EmbeddingsController
from chorus.server.routes.files import FilesController
from chorus.server.routes.models import ModelsController
from chorus.server.routes.vector_stores import VectorStoresController
from chorus.contract.config import Config, convert
from chorus.runtime.defaults import data_dir as resolve_data_dir
from chorus.storage.catalog import Catalog
from chorus.runtime.knowledge.service import Embedder, Knowledge
from chorus.contract.errors import ChorusError, ConfigError, PluginError
from chorus.runtime.keys import KeyRing
from chorus.runtime.pipeline import Pipeline
from chorus.plugins.manager import PluginManager
from chorus.contract.providers import ProviderDriver
from chorus.runtime.registry import Registry
from chorus.contract.search import SearchEngineDriver
from chorus.runtime.skillsets import build_skillsets
from chorus.server.requestid import add_request_id_header, request_id
from chorus.runtime.turns import MemoryTurnStore, SqliteTurnStore, TurnStore

log = logging.getLogger("chorus")
_encode = msgspec.json.Encoder().encode

_HTTP_CODES = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_response(error: ChorusError) -> Response[bytes]:
    """The OpenAI error envelope with the error's status and headers."""
    return Response(
        content=_encode(error.to_dict()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers or None,
    )


def _chorus_error(_: Request, exc: ChorusError) -> Response[bytes]:
    return error_response(exc)


def _http_error(request: Request, exc: HTTPException) -> Response[bytes]:
    kind, code = _HTTP_CODES.get(exc.status_code, ("invalid_request_error", None))
    if exc.status_code >= 500:
        return _unexpected(request, exc)
    message = exc.detail or "Request failed."
    if exc.status_code == 404:
        message = f"Unknown path {request.url.path!r}."
    elif exc.status_code == 413:
        message = f"The request body is larger than this server accepts ({request.app.state.max_body_bytes} bytes)."
    return error_response(ChorusError(message, status_code=exc.status_code, error_type=kind, code=code))


def _client_gone(request: Request, exc: ClientGone) -> Response[bytes]:
    log.info("request %s: client disconnected; upstream work cancelled", request_id(request.scope))
    return Response(content=b"", status_code=499)


def _unexpected(request: Request, exc: Exception) -> Response[bytes]:
    rid = request_id(request.scope)
    log.error("request %s failed: %s", rid, type(exc).__name__, exc_info=exc)
    return error_response(ChorusError(f"The server had an error processing your request (request id {rid})."))


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


def build_knowledge(config: Config, pm: PluginManager, registry: Registry) -> Knowledge:
    """The catalog, the configured vector store driver and (optionally) the embedder."""
    directory = resolve_data_dir(config.data_dir)
    raw = dict(config.vector_store) or {"driver": "sqlite"}
    raw.setdefault("driver", "sqlite")
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
    return Knowledge(Catalog(directory), store, config.knowledge, embedder)


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


def build_turn_store(config: Config) -> TurnStore:
    """Where parked agent turns live: ``[server] parked_turns`` (a SQLite file in the data dir by default)."""
    ttl = config.server.parked_turns_ttl_seconds
    if config.server.parked_turns == "memory":
        return MemoryTurnStore(ttl)
    return SqliteTurnStore(resolve_data_dir(config.data_dir) / "turns.sqlite3", ttl)


def build_keyring(config: Config) -> KeyRing:
    """The key ring of every workspace's configured keys."""
    ring = KeyRing()
    for workspace in config.workspaces:
        for key in workspace.api_keys:
            ring.add(key, workspace.id)
    return ring


def create_app(config: Config, *, pm: PluginManager | None = None) -> Litestar:
    """Build the ASGI app. Provider drivers are created here and started on app startup."""
    pm = pm or PluginManager()
    providers = build_providers(config, pm)
    skillsets = build_skillsets(config.skillsets, pm)
    registry = Registry.from_config(config, providers, build_keyring(config), skillsets)
    knowledge = registry.knowledge = build_knowledge(config, pm, registry)
    engines = registry.search_engines = build_search_engines(config, pm)
    pipeline = Pipeline(pm, registry, config.server, build_turn_store(config))

    async def start_providers(app: Litestar) -> None:
        for provider in providers:
            try:
                await provider.start()
            except ChorusError as exc:
                log.error("provider %s failed to start: %s", provider.id, exc.message)
                raise RuntimeError(f"provider {provider.id!r} failed to start: {exc.message}") from None
        for skillset in skillsets:
            await skillset.start()
        for engine in engines.values():
            await engine.start()
        await knowledge.start()
        await pipeline.turns.start()
        for dataset in config.datasets:
            summary = await knowledge.sync_dataset(dataset)
            log.info("dataset %s: %d added, %d updated, %d unchanged, %d removed, %d failed",
                     dataset.id, summary.added, summary.updated, summary.unchanged, summary.removed, len(summary.failed))
            for name, reason in summary.failed:
                log.warning("dataset %s: %s not ingested: %s", dataset.id, name, reason)

    async def stop_providers(app: Litestar) -> None:
        await pipeline.turns.aclose()
        await knowledge.aclose()
        for engine in engines.values():
            await engine.aclose()
        for skillset in skillsets:
            await skillset.aclose()
        for provider in providers:
            try:
                await provider.aclose()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("provider %s failed to close", provider.id)

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, Any]:
        """Liveness probe (no authentication, no tenant data)."""
        return {"status": "ok"}

    return Litestar(
        route_handlers=[
            chat_completions, ModelsController, EmbeddingsController, FilesController, VectorStoresController, health,
        ],
        state=State(
            {
                "pipeline": pipeline,
                "knowledge": knowledge,
                "plugin_manager": pm,
                "started_at": int(time.time()),
                "max_body_bytes": config.server.max_body_bytes,
            }
        ),
        on_startup=[start_providers],
        on_shutdown=[stop_providers],
        before_send=[add_request_id_header],
        exception_handlers={
            ChorusError: _chorus_error,
            ClientGone: _client_gone,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
