"""create_app for baton-dashboard: wires config, connectors, the /api routes, the page and the
guards. The shared HTTP client for all agents lives in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from .. import __version__
from ..web.docs import install_docs
from ..web.errors import ERROR_RESPONSES, error_response, install_error_handlers
from ..web.methods import install_method_not_allowed
from ..sources.runner import SourceHub
from ..sources.tools import CALL_PATH, ToolGate
from ..web.security import SecurityMiddleware, is_loopback
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
from .routes import sources as source_routes

log = logging.getLogger("baton.dashboard")
TOOL_KEY_NAME = "tool-key"

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


def source_only_env(config: DashboardConfig) -> tuple[str, ...]:
    """The variables a project's `source:` reads (tracker keys and tokens): only the dashboard
    talks to trackers, so no agent it starts inherits them (a coding agent reaches its issue
    through the tool gateway, with a capability token for that issue alone)."""
    names = (name for project in config.projects if project.source for name in project.source.secret_vars())
    return tuple(dict.fromkeys(names))


def tools_base_url(host: str, port: int) -> str:
    """The dashboard's own loopback address, which coding agents' tracker tools call back: the
    gateway answers loopback clients only, whatever address the board listens on."""
    if host.strip("[]") == "::1":
        return f"http://[::1]:{port}"
    if host not in ("0.0.0.0", "::", "") and not is_loopback(host):
        log.warning("the dashboard listens on %s only: tracker tools calling http://127.0.0.1:%d will not reach "
                    "it (listen on a loopback or wildcard address to give agents tracker tools)", host, port)
    return f"http://127.0.0.1:{port}"


def source_state(app: FastAPI, project_id: str) -> dict | None:
    """The health of the project's source as the board shows it (None: the project has none)."""
    hub = getattr(app.state, "sources", None)
    runner = hub.get(project_id) if hub is not None else None
    return runner.health() if runner is not None else None


def create_app(settings: DashboardSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        # The tracker tools' key lives in data/ beside the config folder (as the chats do), so
        # the grants of running tasks outlive a restart; without a file, in a folder of this run.
        scratch = None if settings.data_dir else Path(tempfile.mkdtemp(prefix="baton-dashboard-"))
        key_file = (settings.data_dir or scratch) / TOOL_KEY_NAME
        app.state.tool_gate = ToolGate(key_file, tools_base_url(settings.host, settings.port))
        async with httpx.AsyncClient(limits=limits) as client:
            app.state.connectors = build_connectors(settings.config, client)
            app.state.supervisor = AgentSupervisor(
                settings.config.projects, Timing.from_env(),
                drop_env=chat_only_env(settings.config) + source_only_env(settings.config))
            app.state.supervisor.start()
            # One sync per project with a `source:` (Linear, Jira): backend/sources/runner.py.
            app.state.sources = SourceHub.from_config(settings.config.projects, app.state.connectors,
                                                      app.state.tool_gate, os.environ)
            await app.state.sources.start()
            # One upstream follow per project, shared by every open board page.
            app.state.hubs = build_hubs(app.state.connectors, app.state.supervisor.status,
                                        lambda pid: source_state(app, pid))
            try:
                yield
            finally:
                await asyncio.gather(*(hub.close() for hub in app.state.hubs.values()))
                await app.state.sources.aclose()
                # The agents run in their own sessions (a Ctrl+C reaches only us): stop them here.
                await asyncio.to_thread(app.state.supervisor.stop)
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)

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
    app.include_router(source_routes.router)  # /api/projects/{id}/source, /api/tracker-tools/call
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
        # The tracker tools gateway: a capability token of its own, loopback clients only.
        capability_paths={CALL_PATH},
        session_cookie=(SESSION_COOKIE, app.state.sessions.valid) if settings.token else None,
        auth_throttle=app.state.login_throttle,
        max_body_bytes=settings.config.max_body_bytes,
    )
    return app
