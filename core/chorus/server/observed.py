"""Observation of the routes other than chat completions: each request counted by route and status.

``/v1/chat/completions`` observes itself (:mod:`chorus.server.routes.chat`); the models,
embeddings, files and vector store routes go through :func:`observed`, an ASGI middleware that
starts an observation, reads the status the response starts with and finishes it, so they appear
in ``chorus_requests_total``, ``chorus_request_duration_seconds`` and the JSON request log under
their route's name.
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from chorus.contract.errors import ChorusError
from chorus.runtime.observe import Observer
from chorus.server.requestid import request_id


class _Observed:
    def __init__(self, app: ASGIApp, route: str) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        observer: Observer = scope["app"].state.observer
        observation = observer.start(self.route)
        observation.request_id = request_id(scope)

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                observation.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ChorusError as exc:
            observation.status, observation.error = exc.status_code, exc.code or exc.error_type
            raise
        except BaseException:
            observation.status, observation.error = 500, "internal_error"
            raise
        finally:
            observer.finish(observation)


def observed(route: str) -> DefineMiddleware:
    """Middleware observing every request of a controller as ``route``."""
    return DefineMiddleware(_Observed, route=route)
