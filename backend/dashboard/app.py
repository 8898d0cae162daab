"""create_app for baton-dashboard: wires config, connectors, the /api routes, the page and the
guards. The shared HTTP client for all agents lives in the lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..web.errors import error_response, install_error_handlers
from ..web.security import SecurityMiddleware
from .config import DashboardConfig
from .settings import SESSION_COOKIE, DashboardSettings
from .connectors.base import AgentError, Connector, Unavailable
from .connectors.http import HTTPConnector
from .connectors.local import LocalConnector
from .routes import api, session

def build_connectors(config: DashboardConfig, client: httpx.AsyncClient) -> dict[str, Connector]:
    connectors: dict[str, Connector] = {}
    for project in config.projects:
        if project.agent_url:
            timeout = project.timeout_seconds or config.agent_timeout_seconds
            connectors[project.id] = HTTPConnector(project, client, timeout)
        else:
            connectors[project.id] = LocalConnector(project)
    return connectors


def create_app(settings: DashboardSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(limits=limits) as client:
            app.state.connectors = build_connectors(settings.config, client)
            yield

    app = FastAPI(title="baton-dashboard", version=__version__, lifespan=lifespan,
                  description="One board over every project's Baton agent.")
    app.state.settings = settings
    install_error_handlers(app)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return error_response(502, "agent_unavailable", str(exc))

    @app.exception_handler(AgentError)
    async def agent_error(request: Request, exc: AgentError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    app.include_router(session.router)
    app.include_router(api.router)

    index = settings.frontend_dir / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    for folder in ("css", "js"):
        app.mount(f"/{folder}", StaticFiles(directory=settings.frontend_dir / folder), name=folder)

    allowed = list(settings.config.allowed_hosts)
    if settings.host not in ("0.0.0.0", "::", ""):
        allowed.append(settings.host)
    session_value = settings.session_value
    app.add_middleware(
        SecurityMiddleware,
        token=settings.token,
        allowed_hosts=allowed,
        public_paths={"/", "/api/health", "/api/session"},
        public_prefixes=("/css/", "/js/"),
        session_cookie=(SESSION_COOKIE, session_value) if session_value else None,
        max_body_bytes=settings.config.max_body_bytes,
    )
    return app
