"""The Litestar application: the runtime's services behind the OpenAI routes."""

from __future__ import annotations

import os
import time
from typing import Any

from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from chorus.contract.config import Config
from chorus.plugins.manager import PluginManager
from chorus.runtime.services import Services
from chorus.server.auth import add_rate_limit_headers
from chorus.server.errors import EXCEPTION_HANDLERS, error_response
from chorus.server.metrics_port import SUPERVISED_ENV, MetricsServer
from chorus.server.observed import observed
from chorus.server.requestid import add_request_id_header
from chorus.server.routes.admin import AdminController
from chorus.server.routes.chat import chat_completions
from chorus.server.routes.chat_store import StoredChatsController
from chorus.server.routes.conversations import ConversationsController
from chorus.server.routes.embeddings import EmbeddingsController
from chorus.server.routes.files import FilesController
from chorus.server.routes.metrics import metrics
from chorus.server.routes.models import ModelsController
from chorus.server.routes.playground import playground_routes
from chorus.server.routes.responses import ResponsesController, create_response
from chorus.server.routes.vector_stores import VectorStoresController

__all__ = ["create_app", "error_response"]


@get("/health", sync_to_thread=False)
def health() -> dict[str, Any]:
    """Liveness probe (no authentication, no tenant data)."""
    return {"status": "ok"}


def create_app(config: Config, *, pm: PluginManager | None = None, tracer_provider: Any = None) -> Litestar:
    """Build the ASGI app. Drivers are built (and validated) here and started on app startup.

    ``tracer_provider``: trace with this OpenTelemetry ``TracerProvider`` (default: as the
    ``OTEL_*`` environment says; off without it).
    """
    services = Services(config, pm, tracer_provider=tracer_provider)

    metrics_server: list[MetricsServer] = []
    settings = config.metrics
    token = settings.bearer_token.get() if settings.bearer_token else None

    async def start(app: Litestar) -> None:
        await services.start()
        metrics = services.observer.metrics
        if metrics is not None and settings.port is not None and not os.environ.get(SUPERVISED_ENV):
            metrics_server.append(MetricsServer(settings.host, settings.port, services.observer.render, token).start())

    async def stop(app: Litestar) -> None:
        for server in metrics_server:
            server.stop()
        await services.aclose()

    # chat completions observes itself; the other API routes through the `observed` middleware
    handlers: list[ControllerRouterHandler] = [
        chat_completions, health, create_response,
        *(Router(path="/", route_handlers=[controller], middleware=[observed(route)]) for route, controller in (
            ("models", ModelsController), ("embeddings", EmbeddingsController), ("files", FilesController),
            ("vector_stores", VectorStoresController), ("responses", ResponsesController),
            ("conversations", ConversationsController), ("chat_store", StoredChatsController), ("admin", AdminController))),
    ]
    if config.server.playground:
        handlers += playground_routes()
    if config.metrics.enabled and config.metrics.port is None:
        handlers.append(metrics)

    return Litestar(
        route_handlers=handlers,
        state=State(
            {
                "services": services,
                "pipeline": services.pipeline,
                "responses": services.responses,
                "registry": services.registry,
                "knowledge": services.knowledge,
                "plugin_manager": services.pm,
                "started_at": int(time.time()),
                "max_body_bytes": config.server.max_body_bytes,
                "observer": services.observer,
                "metrics_token": token,
            }
        ),
        on_startup=[start],
        on_shutdown=[stop],
        before_send=[add_request_id_header, add_rate_limit_headers],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
