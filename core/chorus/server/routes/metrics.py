"""``GET /metrics``: Prometheus text exposition (``[metrics]``, docs/observability.md).

Open by default, as scrapers on an internal network expect; ``[metrics] bearer_token`` requires
``Authorization: Bearer <token>`` (compared in constant time). With ``[metrics] port`` the metrics
are served on that port instead (:mod:`chorus.server.metrics_port`) and this route is absent (404).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from chorus.contract.errors import AuthenticationFailed
from chorus.runtime.observe import Observer
from chorus.server.metrics_port import authorized


@get("/metrics", sync_to_thread=False, include_in_schema=False)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every Chorus metric, summed over the workers of ``--workers N``."""
    observer: Observer = request.app.state.observer
    token = request.app.state.metrics_token
    if not authorized(token, request.headers.get("authorization")):
        raise AuthenticationFailed("This endpoint needs the metrics bearer token.", code="invalid_metrics_token")
    body, content_type = observer.render()
    return Response(content=body, media_type=content_type)
