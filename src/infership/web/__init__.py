"""The web page served at ``/``: try the models, watch the server.

Static files only (HTML, CSS and ES modules, no build step and no JavaScript library). The page
uses the server's public endpoints, including ``/metrics`` for its charts, so it needs no API
of its own and shows what any client would see.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",  # blob: previews the image the user picked
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
"""No inline script or style anywhere, so nothing injected into the page can run."""

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new server version must not show an old page
}


def wants_page(request: Request) -> bool:
    """True when the caller asks for HTML (a browser); curl and API clients get JSON."""
    return "text/html" in request.headers.get("accept", "")


async def page(request: Request) -> Response:
    """The page itself, with its security headers."""
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS, media_type="text/html")


def routes() -> list[BaseRoute]:
    """The page's assets under ``/static``; the page itself is answered by the index route."""
    return [Mount("/static", StaticFiles(directory=STATIC), name="static")]
