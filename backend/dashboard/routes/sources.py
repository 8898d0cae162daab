"""A project's issue tracker as the dashboard serves it: its health, "sync now", and the
tracker tools gateway that coding agents call (through the MCP server, backend/sources/mcp_server.py).

The gateway (`POST /api/tracker-tools/call`) is the one dashboard route a coding agent reaches:
it is exempt from the dashboard's own token and sessions (the capability token in
`Authorization: Bearer` is its authentication, backend/sources/tools.py), and the security
middleware answers it only for loopback clients. Every call is checked, in this order: the token
is one the dashboard made (401 `invalid_token`); its project has a source with tools enabled; an
`issue` in the body is the token's; that issue's task is running right now, asked of the project's
agent at each call (so the token dies with its task); a state to move to is one the source names
(each 403 `out_of_scope`). Only then is the tracker called, with the dashboard's secret.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...sources.tools import CALL_PATH, ToolKeyError, carries_marker
from ...trackers.base import Comment, Issue, RateLimited, TrackerError
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.security import loopback_client
from .api import connector_for

log = logging.getLogger("baton.sources.gateway")

router = APIRouter(tags=["sources"], responses=ERROR_RESPONSES)

COMMENT_MAX_CHARS = 10_000
_RUNNING_PAGE = 500  # in_progress summaries asked per page (as many as the agent's workers, in practice)


# ----- a project's source: health and "sync now" ----------------------------------------

def runner_for(request: Request, project_id: str):
    connector_for(request, project_id)  # 404 for an unknown project
    hub = getattr(request.app.state, "sources", None)
    runner = hub.get(project_id) if hub is not None else None
    if runner is None:
        raise ApiError(404, "not_found", f"project {project_id!r} has no source (add `source:` to it in projects.yaml)")
    return runner


@router.get("/api/projects/{project_id}/source")
async def source_health(project_id: str, request: Request) -> dict:
    """The project's issue tracker as its sync sees it: {kind, state: starting|ok|error, healthy,
    reason, last_sync_at, next_sync_at, issues, tasks, calls, ...}; 404 without a source."""
    return runner_for(request, project_id).health()


@router.post("/api/projects/{project_id}/source/sync", status_code=202)
async def source_sync(project_id: str, request: Request) -> dict:
    """Read the tracker now instead of at the next poll; answers the health at once (the sync runs
    on its own: its outcome shows in the health and on the board)."""
    runner = runner_for(request, project_id)
    runner.trigger()
    return runner.health()


# ----- the tracker tools gateway ----------------------------------------------------------

class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: Literal["tracker_get_issue", "tracker_list_comments", "tracker_add_comment", "tracker_update_state"]
    arguments: dict[str, Any] = Field(default_factory=dict)
    issue: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class _NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _CommentArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Annotated[str, Field(min_length=1, max_length=COMMENT_MAX_CHARS)]


class _StateArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Annotated[str, Field(min_length=1, max_length=100)]


_ARGUMENTS = {"tracker_get_issue": _NoArguments, "tracker_list_comments": _NoArguments,
              "tracker_add_comment": _CommentArguments, "tracker_update_state": _StateArguments}


def issue_json(issue: Issue) -> dict:
    return {"id": issue.id, "identifier": issue.identifier, "title": issue.title, "description": issue.description,
            "state": issue.state, "url": issue.url, "labels": list(issue.labels), "priority": issue.priority}


def comment_json(comment: Comment) -> dict:
    return {"id": comment.id, "body": comment.body,
            "created_at": comment.created_at.isoformat() if comment.created_at else None}


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, headers={"WWW-Authenticate": "Bearer"})


def _validation(exc: ValidationError, prefix: str) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    message = "unknown field" if first.get("type") == "extra_forbidden" else str(first.get("msg", "invalid"))
    return ApiError(422, "validation_error", f"{where}: {message}" if where else message)


async def _running_task(connector, issue_id: str) -> dict | None:
    """The summary of the project's in_progress task made from this issue, if there is one."""
    after = None
    while True:
        page = await connector.summaries("in_progress", after, _RUNNING_PAGE, None)
        for summary in page["tasks"]:
            if (summary.get("source") or {}).get("id") == issue_id:
                return summary
        if not page.get("more") or not page["tasks"]:
            return None
        after = page["tasks"][-1]["sort"]


@router.post(CALL_PATH, openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": ToolCall.model_json_schema()}}}})
async def tracker_tool_call(request: Request) -> JSONResponse:
    """A coding agent's tracker tool call, for the one issue its capability token names (the
    header `Authorization: Bearer <token>`; never the dashboard's token): {tool, arguments,
    issue?} -> {result}. Loopback clients only."""
    # Checked again here (the middleware refuses other clients first): this route must never
    # answer the network, whatever the middleware is configured with.
    if not loopback_client((request.client.host if request.client else "")):
        raise ApiError(403, "forbidden_client", "this path answers only programs on this machine (loopback)")
    gate = request.app.state.tool_gate
    token = _bearer(request)
    if not token:
        raise _invalid("missing capability token (Authorization: Bearer <token>)")
    try:
        scope = gate.verify(token)
    except ToolKeyError as exc:
        log.error("tracker tools key: %s", exc)
        raise ApiError(503, "tools_unavailable", f"the tracker tools cannot check tokens: {exc}") from None
    if scope is None:
        raise _invalid("the capability token is not valid (altered, or made by another dashboard key)")
    project_id, kind, issue_id = scope

    try:
        call = ToolCall.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise _validation(exc, "body") from None

    hub = getattr(request.app.state, "sources", None)
    runner = hub.get(project_id) if hub is not None else None
    if runner is None or not runner.config.tools or runner.config.kind != kind:
        raise ApiError(403, "out_of_scope", f"project {project_id!r} has no {kind} source with tools enabled")
    if call.issue is not None and call.issue != issue_id:
        raise ApiError(403, "out_of_scope", "this token is for another issue than the one asked")
    task = await _running_task(request.app.state.connectors[project_id], issue_id)
    if task is None:
        raise ApiError(403, "out_of_scope", f"the task for {_known_identifier(runner, issue_id)} is not running")
    identifier = task["source"].get("identifier") or issue_id
    try:
        arguments = _ARGUMENTS[call.tool].model_validate(call.arguments)
    except ValidationError as exc:
        raise _validation(exc, "arguments") from None
    if call.tool == "tracker_add_comment" and carries_marker(arguments.body):
        # The engine posts a side effect's comment only when no comment carries its marker:
        # an agent must not be able to suppress one (or fake Baton's voice).
        raise ApiError(422, "reserved_marker", "the comment contains a line in the form Baton uses to mark its "
                                               "own comments (\"— Baton (task …, …)\"); leave it out")
    if call.tool == "tracker_update_state":
        allowed = runner.config.allowed_states()
        if arguments.state not in allowed:
            raise ApiError(403, "out_of_scope", f"{identifier} may be moved only to {', '.join(allowed)}; "
                                                f"not to {arguments.state!r}")

    log.info("tracker tool %s on %s (project %s)", call.tool, identifier, project_id)
    try:
        result = await _run(runner.tracker, call.tool, issue_id, arguments)
    except RateLimited as exc:
        wait = max(1, math.ceil(exc.retry_after)) if exc.retry_after else None
        log.warning("tracker tool %s on %s (project %s): rate limited", call.tool, identifier, project_id)
        raise ApiError(503, "rate_limited", exc.message,
                       headers={"Retry-After": str(wait)} if wait else None) from None
    except TrackerError as exc:
        log.warning("tracker tool %s on %s (project %s) failed: %s", call.tool, identifier, project_id, exc.kind)
        raise ApiError(502, "tracker_error", exc.message) from None
    return JSONResponse({"result": result})


def _known_identifier(runner, issue_id: str) -> str:
    """ABC-1 when the sync knows the issue, else its id."""
    issues = getattr(getattr(runner, "engine", None), "issues", None)
    issue = issues.get(issue_id) if isinstance(issues, dict) else None
    return getattr(issue, "identifier", None) or issue_id


async def _run(tracker, tool: str, issue_id: str, arguments: BaseModel):
    if tool == "tracker_get_issue":
        return issue_json(await tracker.get_issue(issue_id))
    if tool == "tracker_list_comments":
        return [comment_json(c) for c in await tracker.comments(issue_id)]
    if tool == "tracker_add_comment":
        return comment_json(await tracker.add_comment(issue_id, arguments.body))
    issue = await tracker.get_issue(issue_id)
    return issue_json(await tracker.move(issue, arguments.state))
