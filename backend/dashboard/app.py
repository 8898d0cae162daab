"""create_app for baton-dashboard: wires config, connectors, the /api routes, the page and the
guards. The shared HTTP client for all agents lives in the lifespan."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from .. import __version__
from ..web.docs import install_docs
from ..web.errors import ERROR_RESPONSES, error_response, install_error_handlers
from ..web.methods import install_method_not_allowed
from ..web.security import SecurityMiddleware
from .config import DashboardConfig
from .sessions import LoginThrottle, SessionStore
from .supervisor import AgentSupervisor, Timing
from .settings import SESSION_COOKIE, DashboardSettings
from .connectors.base import AgentError, Connector, Unavailable
from .connectors.http import HTTPConnector
from .connectors.local import LocalConnector
from .projecthub import build_hubs
from .routes import api, session
from .routes import attachments as attachment_routes
from .routes import plans as plan_routes
from .routes import chat as chat_routes

def build_connectors(config: DashboardConfig, client: httpx.AsyncClient) -> dict[str, Connector]:
    connectors: dict[str, Connector] = {}
    for project in config.projects:
        if project.agent_url:
            timeout = project.timeout_seconds or config.agent_timeout_seconds
            connectors[project.id] = HTTPConnector(project, client, timeout)
        else:
            connectors[project.id] = LocalConnector(project)
    return connectors


def chat_only_env(config: DashboardConfig) -> tuple[str, ...]:
    """Variables the agents this dashboard starts must not inherit: a key the person named for
    the chat alone (`chat.api_key_env`). ANTHROPIC_API_KEY itself is the key Claude Code and
    OpenCode read too, so it passes as the rest of the environment does (the agent's runtime
    settings decide what reaches a coding agent)."""
    name = config.chat.api_key_env
    return () if name == "ANTHROPIC_API_KEY" else (name,)


def create_app(settings: DashboardSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(limits=limits) as client:
            app.state.connectors = build_connectors(settings.config, client)
            app.state.supervisor = AgentSupervisor(settings.config.projects, Timing.from_env(),
                                                   drop_env=chat_only_env(settings.config))
            app.state.supervisor.start()
            # One upstream follow per project, shared by every open board page.
            app.state.hubs = build_hubs(app.state.connectors, app.state.supervisor.status)
            try:
                yield
            finally:
                await asyncio.gather(*(hub.close() for hub in app.state.hubs.values()))
                # The agents run in their own sessions (a Ctrl+C reaches only us): stop them here.
                await asyncio.to_thread(app.state.supervisor.stop)

    # FastAPI's own /docs and /redoc load a CDN and inline script; web/docs.py serves ours.
    app = FastAPI(title="baton-dashboard", version=__version__, lifespan=lifespan,
                  responses={**ERROR_RESPONSES, 502: {"model": ERROR_RESPONSES[400]["model"]}},
                  docs_url=None, redoc_url=None,
                  description="One board over every project's Baton agent.")
    app.state.settings = settings
    # In memory on purpose: a restart signs everyone out.
    app.state.sessions = SessionStore(settings.config.session_hours * 3600)
    app.state.login_throttle = LoginThrottle()
    install_error_handlers(app)
    install_method_not_allowed(app)
    install_docs(app)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return error_response(502, "agent_unavailable", str(exc))

    @app.exception_handler(AgentError)
    async def agent_error(request: Request, exc: AgentError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    app.include_router(session.router)
    # Before api: GET …/tasks/{id}/attachments is not …/tasks/{status}/{filename}.
    app.include_router(attachment_routes.router)
    app.include_router(api.router)
    app.include_router(plan_routes.router)  # /api/projects/{id}/plans
    app.state.chat = chat_routes.build_chat(settings.config.chat)
    app.include_router(chat_routes.router)  # /api/projects/{id}/chats

    index = settings.frontend_dir / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    for folder in ("css", "js"):
        app.mount(f"/{folder}", StaticFiles(directory=settings.frontend_dir / folder), name=folder)

    # Large answers (the board) are compressed; Starlette leaves text/event-stream alone, so the
    # board's and the tasks' streams stay unbuffered.
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=5)
    allowed = list(settings.config.allowed_hosts)
    if settings.host not in ("0.0.0.0", "::", ""):
        allowed.append(settings.host)
    app.add_middleware(
        SecurityMiddleware,
        token=settings.token,
        allowed_hosts=allowed,
        public_paths={"/", "/api/health", "/api/session"},
        public_prefixes=("/css/", "/js/"),
        session_cookie=(SESSION_COOKIE, app.state.sessions.valid) if settings.token else None,
        auth_throttle=app.state.login_throttle,
        max_body_bytes=settings.config.max_body_bytes,
    )
    return app
