"""The Litestar application: wiring of configuration, plugins, providers and controllers."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from chorus.api.chat import ChatController, ClientGone
from chorus.api.models import ModelsController
from chorus.config import Config, convert
from chorus.errors import ChorusError, ConfigError, PluginError
from chorus.keys import KeyRing
from chorus.pipeline import Pipeline
from chorus.plugins.manager import PluginManager
from chorus.providers import ProviderDriver
from chorus.registry import Registry
from chorus.skillsets import build_skillsets
from chorus.requestid import add_request_id_header, request_id

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
    pipeline = Pipeline(pm, registry, config.server)

    async def start_providers(app: Litestar) -> None:
        for provider in providers:
            try:
                await provider.start()
            except ChorusError as exc:
                log.error("provider %s failed to start: %s", provider.id, exc.message)
                raise RuntimeError(f"provider {provider.id!r} failed to start: {exc.message}") from None
        for skillset in skillsets:
            await skillset.start()

    async def stop_providers(app: Litestar) -> None:
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
        route_handlers=[ChatController, ModelsController, health],
        state=State(
            {
                "pipeline": pipeline,
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
