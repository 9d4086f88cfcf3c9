"""The playground: a static web page at ``/`` that talks to this server's own OpenAI API.

``GET /`` answers the page (``index.html``, read once when the app is built) and
``/playground/<file>`` its script and style sheet, through Litestar's static files router. Nothing
here needs a key: the page asks the user for one and sends it on its own API calls, like any other
client. The routes are separate from the API's, so the hot path never sees them; ``[server]
playground = false`` leaves them out of the app altogether.

The page is plain HTML, CSS and JavaScript shipped inside the package (no build step, no CDN). Its
``Content-Security-Policy`` allows only this origin's script, style and ``fetch``: no inline
script, no third-party anything.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

#: Where the page lives inside the package: ``index.html`` and ``assets/``.
PLAYGROUND_DIR = Path(__file__).resolve().parents[1] / "playground"
ASSETS_PATH = "/playground"

PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def playground_routes() -> list[ControllerRouterHandler]:
    """``GET /`` (the page) and the static router for ``/playground/*`` (its assets)."""
    page = (PLAYGROUND_DIR / "index.html").read_bytes()

    @get("/", sync_to_thread=False, name="playground", include_in_schema=False)
    def playground() -> Response[bytes]:
        """The playground page (no authentication: it holds no data)."""
        return Response(content=page, media_type="text/html", headers=PAGE_HEADERS)

    assets: Router = create_static_files_router(
        path=ASSETS_PATH,
        directories=[PLAYGROUND_DIR / "assets"],
        name="playground-assets",
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    )
    return [playground, assets]
