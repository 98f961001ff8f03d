"""FastAPI's ``/docs`` (Swagger UI) from files installed with the gateway.

FastAPI's own page loads Swagger UI from a CDN; a gateway on a closed network, or a
browser that should not tell a third party what it is looking at, would get a blank page.
The ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads the OpenAPI 3.1
schema FastAPI writes) ships the same assets, served here under
``/console/static/swagger/``. URLs are relative (``docs`` -> ``openapi.json``), so the
page works under a proxy's path prefix too.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse
from swagger_ui_bundle import swagger_ui_path

ASSETS = "console/static/swagger"


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; the app must be made with ``docs_url=None``."""
    app.mount(f"/{ASSETS}", StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    openapi = (app.openapi_url or "/openapi.json").lstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
