"""/docs and /redoc served from this process, with no CDN: FastAPI's own pages load Swagger UI and
ReDoc from jsdelivr, so offline (or behind a proxy that blocks it) /docs was a blank page.

The assets come from the ``fastapi-offline`` package (Swagger UI 5, which renders FastAPI's
OpenAPI 3.1; ReDoc 2), mounted under /docs/static. Without that package installed the pages still
load, with a link to /openapi.json in place of the UI, and still name no other host.
"""

from __future__ import annotations

import html
import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"
logger = logging.getLogger("brokerstack.api")


def assets_dir() -> Path | None:
    """The directory with swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and
    favicon.png, or None when the package is not installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> None:
    """Call on an app created with ``docs_url=None, redoc_url=None``."""
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    static = assets_dir()
    if static is None:
        logger.warning("fastapi-offline is not installed: /docs shows a link to %s instead of Swagger UI", openapi_url)

        @app.get("/docs", include_in_schema=False)
        @app.get("/redoc", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            link = html.escape(openapi_url)
            return HTMLResponse(
                f"<!doctype html><title>{html.escape(title)}</title>"
                f'<p>The API\'s description is at <a href="{link}">{link}</a> '
                "(install fastapi-offline for the interactive page).</p>"
            )

        return

    app.mount(STATIC_URL, StaticFiles(directory=static), name="docs-static")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        # with_google_fonts=False: ReDoc's page would otherwise load its fonts from Google.
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
