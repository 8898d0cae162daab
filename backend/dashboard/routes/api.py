"""/api/projects/...: the board's data, relayed to each project's connector."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from ...agent.schemas import BulkCreate, RuntimeList
from ...diff import MAX_CONTEXT
from ...agent.routes.review import Approval, Rejection
from ...agent.routes.tasks import IdempotencyKey, check_id, check_idempotency_key
from ...models import STATUSES, NewMessage, NewTask, is_valid_task_id
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.params import ANY_STATUS, DetailStatusPath, FilenamePath, StatusPath, TaskIdPath
from ..boardfeed import WINDOW, BoardFeed, board_cursor, describe, group, parse_board_cursor
from ..connectors.base import AgentError, Connector, Unavailable, reason_of
from ..schemas import Board, BoardPage
from ..supervisor import MAX_TAIL_LINES

router = APIRouter(prefix="/api", tags=["projects"], responses=ERROR_RESPONSES)

ActionPath = Annotated[str, Path(json_schema_extra={"enum": ["start", "stop", "restart"]})]


def connector_for(request: Request, project_id: str) -> Connector:
    connector = request.app.state.connectors.get(project_id)
    if connector is None:
        raise ApiError(404, "not_found", f"no project {project_id!r}")
    return connector


def _describe(connector: Connector, overview: dict, request: Request) -> dict:
    pid = connector.project.id
    hub = getattr(request.app.state, "sources", None)
    runner = hub.get(pid) if hub is not None else None
    return describe(connector, overview, request.app.state.supervisor.status(pid),
                    runner.health() if runner is not None else None)


@router.get("/projects")
async def projects(request: Request) -> dict:
    """Every project with its health, dispatcher state and task counts, asked concurrently:
    a slow or dead agent costs at most its timeout and never hides the others."""
    connectors: dict[str, Connector] = request.app.state.connectors
    overviews = await asyncio.gather(*(c.overview() for c in connectors.values()))
    return {"projects": [_describe(c, o, request) for c, o in zip(connectors.values(), overviews)]}


@router.get("/board", response_model=None, responses={200: {"model": Board}})
async def board(request: Request) -> Response:
    """What the page shows first, in one answer: every project (as /api/projects) with its usage
    and each status's first summaries (content comes when a task is opened); `tasks` is null,
    with `tasks_error`, for a project that cannot be read. Then follow /api/board/stream from
    `cursor`."""
    connectors: dict[str, Connector] = request.app.state.connectors

    async def one(connector: Connector) -> dict:
        overview, changes = await connector.board(WINDOW)
        entry = _describe(connector, overview, request)
        if connector.identity_problem is not None:
            # Another project's agent answers: its tasks (even if read before health said so) are
            # not this project's.
            why = connector.identity_problem
            entry.update(tasks=None, tasks_error=why, healthy=False, reason=why, usage=None, cursor=None)
        elif isinstance(changes, (Unavailable, AgentError)):
            why = reason_of(changes)
            entry.update(tasks=None, tasks_error=why, healthy=False, reason=overview["reason"] or why,
                         usage=None, cursor=None)
        elif isinstance(changes, BaseException):
            raise changes
        else:
            entry.update(tasks=group(changes["tasks"]), tasks_error=None, usage=changes.get("usage"),
                         cursor=changes["cursor"])
        return entry

    entries = await asyncio.gather(*(one(c) for c in connectors.values()))
    body = {"projects": entries, "cursor": board_cursor({e["id"]: e["cursor"] for e in entries if e["cursor"]})}
    # Plain JSON, off the event loop: FastAPI's encoder walks every value of thousands of
    # summaries (megabytes at 20 x 5,000 tasks) several times slower than json.dumps.
    return Response(await asyncio.to_thread(_dumps, body), media_type="application/json")


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@router.get("/board/stream", response_class=StreamingResponse)
async def board_stream(request: Request, cursor: Annotated[str | None, Query(max_length=100_000)] = None,
                       last_event_id: Annotated[str | None, Header(max_length=100_000)] = None) -> StreamingResponse:
    """Every project's changes as Server-Sent Events: `project` (a project as in /api/board,
    without tasks, cursor and usage) when what it shows changes, `usage` ({project, usage}) when
    its usage changes, `tasks` ({project, reset, tasks, removed}; `id:` = the combined cursor)
    when its tasks change. Resume with Last-Event-ID (it wins over `cursor`); a project whose
    cursor is missing or stale starts with a reset. Every page shares one follow per project."""
    feed = BoardFeed(request.app.state.hubs, parse_board_cursor(last_event_id if last_event_id else cursor))
    events = feed.events()
    # Closed explicitly once the page has gone: a generator cancelled while it waits at a `yield`
    # would otherwise keep following every agent until garbage collection.
    return StreamingResponse(events, media_type="text/event-stream", background=BackgroundTask(events.aclose),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


StatusQuery = Annotated[str, Query(description="A task status.", json_schema_extra={"enum": list(STATUSES)})]


@router.get("/board/page", response_model=None, responses={200: {"model": BoardPage}})
async def board_page(request: Request, status: StatusQuery,
                     after: Annotated[str | None, Query(max_length=200)] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     q: Annotated[str | None, Query(max_length=200)] = None,
                     project: Annotated[str | None, Query(max_length=64)] = None) -> dict:
    """The next page of one status column (summaries with sort > `after`), across every project
    (or one), merged by `sort`; `q`: case-insensitive substring of title or id."""
    if status not in STATUSES:
        raise ApiError(400, "invalid_status", f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    connectors = [connector_for(request, project)] if project else list(request.app.state.connectors.values())
    answers = await asyncio.gather(*(c.summaries(status, after, limit, q or None) for c in connectors),
                                   return_exceptions=True)
    merged, more, unavailable = [], False, []
    for connector, answer in zip(connectors, answers):
        if isinstance(answer, (Unavailable, AgentError)) and not project:
            unavailable.append({"project": connector.project.id, "reason": reason_of(answer)})
            continue  # shown unhealthy on the board; the other projects' cards still page
        if isinstance(answer, BaseException):
            raise answer
        pid = connector.project.id
        merged.extend({**item, "project": pid} for item in answer["tasks"])
        more = more or bool(answer["more"])
    merged.sort(key=lambda item: (item["sort"], item["project"]))
    return {"tasks": merged[:limit], "more": more or len(merged) > limit, "unavailable": unavailable}


@router.get("/projects/{project_id}/agent-log")
async def agent_log(project_id: str, request: Request,
                    lines: Annotated[int, Query(ge=1, le=MAX_TAIL_LINES)] = 200) -> dict:
    """The last lines of `<path>/logs/baton-agent.log` of an agent this dashboard started."""
    connector_for(request, project_id)
    tail = await asyncio.to_thread(request.app.state.supervisor.log_tail, project_id, lines)
    if tail is None:
        raise ApiError(404, "not_found", f"project {project_id!r} has no agent started by this dashboard")
    return {"lines": tail}


@router.get("/projects/{project_id}/tasks")
async def tasks(project_id: str, request: Request) -> dict:
    return await connector_for(request, project_id).tasks()


@router.get("/projects/{project_id}/runtimes", response_model=None, responses={200: {"model": RuntimeList}})
async def runtimes(project_id: str, request: Request) -> dict:
    """The runtimes a new task of this project may choose (as GET /agent/runtimes)."""
    return await connector_for(request, project_id).runtimes()


@router.get("/projects/{project_id}/tasks/{task_id}/events")
async def events(project_id: str, task_id: TaskIdPath, request: Request,
                 after: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> dict:
    check_id(task_id)
    return await connector_for(request, project_id).events(task_id, after, limit)


@router.get("/projects/{project_id}/tasks/{task_id}/stream", response_class=StreamingResponse)
async def stream(project_id: str, task_id: TaskIdPath, request: Request,
                 after: Annotated[int, Query(ge=0)] = 0,
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """The task's live events, relayed as Server-Sent Events (resume with Last-Event-ID)."""
    check_id(task_id)
    connector = connector_for(request, project_id)
    start = int(last_event_id) if last_event_id and last_event_id.isascii() and last_event_id.isdigit() else after
    # Opened before answering: "no such task" or "agent down" get the error shape and status,
    # which also tells the browser's EventSource not to reconnect.
    upstream = await connector.open_stream(task_id, start)

    async def relay():
        async for chunk in upstream:
            yield chunk
            if await request.is_disconnected():
                break

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/projects/{project_id}/tasks/{task_id}/diff")
async def diff(project_id: str, task_id: TaskIdPath, request: Request,
               context: Annotated[int, Query(ge=0, le=MAX_CONTEXT)] = 3) -> dict:
    """(Before the {status}/{filename} route, which would take it.) The task's changes as files and hunks (see the agent's GET /agent/tasks/{id}/diff)."""
    check_id(task_id)
    return await connector_for(request, project_id).diff(task_id, context)


@router.get("/projects/{project_id}/tasks/{status}/{filename}")
async def task(project_id: str, status: DetailStatusPath, filename: FilenamePath, request: Request) -> dict:
    if (status not in STATUSES and status != ANY_STATUS) or not is_valid_task_id(filename.removesuffix(".md")):
        raise ApiError(404, "not_found", f"no {status!r} task {filename!r}")
    return await connector_for(request, project_id).task(status, filename)


@router.post("/projects/{project_id}/tasks", status_code=201)
async def create(project_id: str, body: NewTask, request: Request, idempotency_key: IdempotencyKey = None) -> dict:
    check_idempotency_key(idempotency_key)
    return await connector_for(request, project_id).create(body.model_dump(mode="json"), idempotency_key)


@router.post("/projects/{project_id}/tasks/bulk", status_code=201)
async def bulk(project_id: str, body: BulkCreate, request: Request, idempotency_key: IdempotencyKey = None) -> dict:
    check_idempotency_key(idempotency_key)
    return await connector_for(request, project_id).bulk(body.model_dump(mode="json"), idempotency_key)


@router.post("/projects/{project_id}/tasks/{task_id}/rerun")
async def rerun(project_id: str, task_id: TaskIdPath, request: Request) -> dict:
    check_id(task_id)
    return await connector_for(request, project_id).rerun(task_id)


@router.post("/projects/{project_id}/tasks/{task_id}/cancel")
async def cancel(project_id: str, task_id: TaskIdPath, request: Request) -> dict:
    check_id(task_id)
    return await connector_for(request, project_id).cancel(task_id)


# ----- a person in the loop (issue #11): relayed to the agent with its bodies and answers

@router.post("/projects/{project_id}/tasks/{task_id}/messages", status_code=202)
async def message(project_id: str, task_id: TaskIdPath, body: NewMessage, request: Request) -> dict:
    """A follow-up message: queued for a running task's next turn, or a new turn of a settled one
    (`delivery`: queued | started)."""
    check_id(task_id)
    return await connector_for(request, project_id).message(task_id, body.model_dump(mode="json"))


@router.post("/projects/{project_id}/tasks/{task_id}/approve")
async def approve(project_id: str, task_id: TaskIdPath, request: Request, body: Approval | None = None) -> dict:
    """Approve a task in review (`sha`: the commit looked at) or its plan in plan_review."""
    check_id(task_id)
    return await connector_for(request, project_id).approve(task_id, (body or Approval()).model_dump())


@router.post("/projects/{project_id}/tasks/{task_id}/request-changes")
async def request_changes(project_id: str, task_id: TaskIdPath, body: NewMessage, request: Request) -> dict:
    """Send a task in review back with a message and comments on lines (or revise its plan)."""
    check_id(task_id)
    return await connector_for(request, project_id).request_changes(task_id, body.model_dump(mode="json"))


@router.post("/projects/{project_id}/tasks/{task_id}/reject")
async def reject(project_id: str, task_id: TaskIdPath, request: Request, body: Rejection | None = None) -> dict:
    """Reject a task in review or plan review: cancelled, its branch kept."""
    check_id(task_id)
    return await connector_for(request, project_id).reject(task_id, (body or Rejection()).model_dump())


@router.post("/projects/{project_id}/tasks/{task_id}/pr/refresh")
async def refresh_pr(project_id: str, task_id: TaskIdPath, request: Request) -> dict:
    """Read the task's pull request from GitHub now (needs the project's agent)."""
    check_id(task_id)
    return await connector_for(request, project_id).refresh_pr(task_id)


@router.get("/projects/{project_id}/dispatcher")
async def dispatcher(project_id: str, request: Request) -> dict:
    return await connector_for(request, project_id).dispatcher()


@router.post("/projects/{project_id}/dispatcher/{action}")
async def dispatcher_action(project_id: str, action: ActionPath, request: Request, force: bool = False) -> dict:
    if action not in ("start", "stop", "restart"):
        raise ApiError(404, "not_found", f"unknown dispatcher action {action!r}; expected start, stop or restart")
    return await connector_for(request, project_id).dispatcher_action(action, force)


@router.get("/projects/{project_id}/worktrees")
async def worktrees(project_id: str, request: Request) -> dict:
    return await connector_for(request, project_id).worktrees()


@router.get("/projects/{project_id}/commits")
async def commits(project_id: str, request: Request, count: Annotated[int, Query(ge=1, le=500)] = 10) -> list:
    return await connector_for(request, project_id).commits(count)
