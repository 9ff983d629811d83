"""The page's routes, in-process: HTML for browsers at /, JSON for everyone else, the assets,
and the security headers."""

from __future__ import annotations

import re

import httpx
import pytest

from infership.app import Application
from infership.protocols.rest.app import create_rest_app
from infership.settings import ServerSettings
from infership.web import STATIC

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_browser_gets_the_page_with_a_strict_csp(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"accept": BROWSER})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/app.js">' in response.text


def test_the_page_has_no_inline_script_or_style() -> None:
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert "<style" not in html
        assert " style=" not in html
        assert not re.search(r"\son[a-z]+=", html), f"inline event handler in {page.name}"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
async def test_api_clients_get_the_json_index(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    headers = {"accept": accept} if accept else {}
    response = await client.get("/", headers=headers)
    assert response.status_code == 200
    assert response.json()["models"] == ["efficientnet-lite0"]
    assert response.json()["ready"] is True


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/metrics.js", "text/javascript"),
        ("/static/charts.js", "text/javascript"),
        ("/static/snippets.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_assets_are_served_with_their_types(
    client: httpx.AsyncClient, path: str, media: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert "etag" in response.headers


async def test_every_asset_the_page_names_exists(client: httpx.AsyncClient) -> None:
    page = (await client.get("/", headers={"accept": BROWSER})).text
    modules = "".join(p.read_text() for p in STATIC.glob("*.js"))
    named = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page))
    named |= {f"/static/{m}" for m in re.findall(r'from "\./([^"]+)"', modules)}
    assert len(named) >= 6
    for path in named:
        assert (await client.get(path)).status_code == 200, path


async def test_an_unknown_asset_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/nope.js")
    assert response.status_code == 404
    assert "error" in response.json()


async def test_with_the_page_off_browsers_get_json_and_no_assets(
    example_app: Application,
) -> None:
    settings = ServerSettings(observability={"web_page": False, "tracing": False})
    app = create_rest_app(example_app.dataplane, settings, example_app.metrics)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        index = await c.get("/", headers={"accept": BROWSER})
        assert index.json()["name"] == "infership"
        assert (await c.get("/static/app.js")).status_code == 404
