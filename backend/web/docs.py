"""/docs for both servers: Swagger UI served from installed packages, never from a CDN.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; the CSP
every response carries (default-src 'self') blocks both, so the page stayed blank. Here the
assets come from the `fastapi-offline` package, the start-up code is our own file, and the page
is plain HTML with neither inline script nor style.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from .errors import ApiError

DOCS_PATH = "/docs"
ASSETS_PREFIX = "/docs/assets/"

_OWN = Path(__file__).parent / "docs_assets"


def _assets() -> dict[str, tuple[Path, str]]:
    vendor = Path(str(files("fastapi_offline") / "static"))
    return {
        "swagger-ui.css": (vendor / "swagger-ui.css", "text/css"),
        "swagger-ui-bundle.js": (vendor / "swagger-ui-bundle.js", "text/javascript"),
        "docs-init.js": (_OWN / "docs-init.js", "text/javascript"),
    }


def docs_page(title: str, openapi_url: str) -> str:
    t, url = html.escape(title), html.escape(openapi_url)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{t} - API docs</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSETS_PREFIX}swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{url}"></div>
<script src="{ASSETS_PREFIX}swagger-ui-bundle.js"></script>
<script src="{ASSETS_PREFIX}docs-init.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve /docs and its assets. Build the app with docs_url=None and redoc_url=None."""
    assets = _assets()
    page = docs_page(app.title, app.openapi_url or "/openapi.json")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get(ASSETS_PREFIX + "{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        if name not in assets:
            raise ApiError(404, "not_found", f"no docs asset {name!r}")
        path, media_type = assets[name]
        return FileResponse(path, media_type=media_type)
