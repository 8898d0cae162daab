"""create_app: wires settings, store, routes, error handlers and guards. No I/O here, except
detecting the base branch when the settings leave it to detection (the CLI resolves it first)."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..changefeed import ChangeFeed
from ..dispatcher.dispatcher import Dispatcher
from ..gitrepo import GitError, ensure_excluded
from ..mirrors import MirrorWriter
from ..plans.follow import PlanFollower
from ..plans.store import PlanStore
from ..store import (
    InvalidTransitionError,
    StoreBusyError,
    StoreFullError,
    StoreCorruptError,
    StoreUnreadableError,
    TaskNotFoundError,
    TaskStore,
)
from ..sources.tools import CALL_PATH
from ..web.docs import install_docs
from ..web.errors import ERROR_RESPONSES, error_response, install_error_handlers
from ..web.methods import install_method_not_allowed
from ..web.security import SecurityMiddleware
from .routes import dispatcher as dispatcher_routes
from .routes import plans as plan_routes
from .routes import context as context_routes
from .basebranch import resolve_settings
from .routes import archive, changes, diff, events, git, health, review, runtimes, tasks
from .routes import attachments as attachment_routes
from .routes import api_v1, trackertools
from .settings import RUNTIME_PATTERNS, AgentSettings

if TYPE_CHECKING:
    from ..workflow.live import LiveWorkflow

HEALTH_PATH = "/agent/health"


def build_store(settings: AgentSettings) -> TaskStore:
    return TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))


def create_app(
    settings: AgentSettings, store: TaskStore | None = None, dispatcher: Dispatcher | None = None,
    workflow: LiveWorkflow | None = None, guardrails_flag: bool = False,
) -> FastAPI:
    """`workflow`: the WORKFLOW.md to run unattended (backend/workflow/); None: none, and
    nothing of it is added. `guardrails_flag`: the guardrails flag was on this agent's command
    line (without it, an edit of the workflow to a runtime bypassing its prompts is refused)."""
    settings = resolve_settings(settings)  # every consumer must see the same base branch
    store = store if store is not None else build_store(settings)
    dispatcher = dispatcher if dispatcher is not None else Dispatcher(settings, store)
    runner = None
    if workflow is not None:
        from ..workflow.runner import WorkflowRunner  # the tracker clients load only with a workflow

        runner = WorkflowRunner(settings, store, dispatcher, workflow, guardrails_flag=guardrails_flag)
    plans = PlanStore(settings.project_dir)
    plan_follower = PlanFollower(plans, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(ensure_excluded, settings.project_dir, RUNTIME_PATTERNS, "Baton runtime state")
        # Crash recovery runs even when the dispatcher is not started automatically.
        await run_in_threadpool(dispatcher.recover)
        # Plans catch up with what their tasks did while no agent ran, then follow every write.
        await run_in_threadpool(plan_follower.catch_up)
        plan_follower.start()
        if runner is not None:  # its tracker, policy and runtimes are in place before any claim
            await runner.start()
        try:
            if settings.config.dispatcher_autostart:
                await run_in_threadpool(dispatcher.start)
            yield
        finally:
            if runner is not None:  # no more tasks from the tracker while the runs wind down
                await runner.aclose()
        # Stop claiming, stop every agent, return their tasks to pending.
        await run_in_threadpool(dispatcher.shutdown)
        await run_in_threadpool(plan_follower.stop)

    app = FastAPI(
        title=f"baton-agent: {settings.project_name}",
        version=__version__,
        description="Per-project Baton agent: tasks, dispatcher, live events and git views.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # FastAPI's pages load a CDN and inline script; see web/docs.py
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.dispatcher = dispatcher
    app.state.plans = plans
    app.state.workflow = runner  # read by /agent/health, /api/v1 and the tracker tools gateway
    app.state.started_monotonic = time.monotonic()
    app.state.change_feed = ChangeFeed(store)
    # Dispatcher state that is no store write (start/stop, a run's phase, the merge queue) wakes
    # the change streams at once instead of at their next poll.
    dispatcher.listen(app.state.change_feed.wake)
    app.state.change_poll_seconds = 1.0  # catches other processes' writes to the store

    install_error_handlers(app)
    install_method_not_allowed(app)
    install_docs(app)
    _install_store_errors(app)
    # events before tasks: /agent/tasks/{id}/events must not be read as /{status}/{filename}.
    # attachments before tasks too: GET /agent/tasks/{id}/attachments is not /{status}/{filename}.
    for module in (health, events, diff, review, attachment_routes, tasks, archive, dispatcher_routes, runtimes,
                   git, changes):
        app.include_router(module.router)
    app.include_router(plan_routes.router)  # /agent/plans
    app.include_router(context_routes.router)  # GET /agent/context, for the dashboard's chat
    app.include_router(api_v1.router)  # Symphony's /api/v1 (404 workflow_not_configured without a workflow)
    if runner is not None:
        app.include_router(trackertools.router)  # the tracker tools gateway of the workflow's tracker
    runtimes.document_choices(app, list(dispatcher.ctx.runtimes))

    # Large answers (task lists, windows of summaries) shrink ~10x; text/event-stream is never
    # compressed (Starlette's default exclusion), so streams are not buffered.
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=5)
    allowed = list(settings.config.allowed_hosts)
    if settings.host not in ("0.0.0.0", "::", ""):
        allowed.append(settings.host)
    app.add_middleware(
        SecurityMiddleware,
        token=settings.token,
        allowed_hosts=allowed,
        public_paths={HEALTH_PATH},
        # The workflow's tracker tools gateway: a capability token of its own, loopback clients only.
        capability_paths={CALL_PATH} if runner is not None else (),
        max_body_bytes=settings.config.max_body_bytes,
    )
    return app


def _install_store_errors(app: FastAPI) -> None:
    async def not_found(request: Request, exc: TaskNotFoundError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    async def conflict(request: Request, exc: InvalidTransitionError) -> JSONResponse:
        return error_response(409, "invalid_transition", str(exc))

    async def corrupt(request: Request, exc: StoreCorruptError) -> JSONResponse:
        return error_response(503, "store_corrupt", f"task store refused: {exc}")

    async def full(request: Request, exc: StoreFullError) -> JSONResponse:
        # The change was not made (nothing half-applied); it can be retried once space is freed.
        return error_response(507, "insufficient_storage", f"task store: {exc}")

    async def busy(request: Request, exc: StoreBusyError) -> JSONResponse:
        return error_response(503, "store_busy", str(exc))

    async def unreadable(request: Request, exc: StoreUnreadableError) -> JSONResponse:
        return error_response(503, "store_unreadable", str(exc))

    async def git_failed(request: Request, exc: GitError) -> JSONResponse:
        return error_response(500, "git_error", str(exc))

    app.add_exception_handler(TaskNotFoundError, not_found)
    app.add_exception_handler(InvalidTransitionError, conflict)
    app.add_exception_handler(StoreCorruptError, corrupt)
    app.add_exception_handler(StoreBusyError, busy)
    app.add_exception_handler(StoreFullError, full)
    app.add_exception_handler(StoreUnreadableError, unreadable)
    app.add_exception_handler(GitError, git_failed)
