"""The tracker tools gateway's checks, shared by the dashboard and baton-agent.

A coding agent's tracker tool call (`POST /api/tracker-tools/call`, from the MCP server in
backend/sources/mcp_server.py) reaches whichever process holds the tracker's secret: the
dashboard for a projects.yaml `source:`, baton-agent for its WORKFLOW.md's tracker. Both routes
call `call_tool` with what they know: where the source of a project is, and how to ask whether
an issue's task is running right now. Every call is checked in this order: the client is on
loopback (403 `forbidden_client`); the token is one this process's gate made (401
`invalid_token`); its project has a source of the token's kind with tools enabled; an `issue` in
the body is the token's; that issue's task is running (so the token dies with its task); a state
to move to is one the source names (each 403 `out_of_scope`). Only then is the tracker called.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..trackers.base import Comment, Issue, RateLimited, TrackerError
from ..web.errors import ApiError
from ..web.security import loopback_client
from .tools import ToolGate, ToolKeyError, carries_marker

log = logging.getLogger("baton.sources.gateway")

COMMENT_MAX_CHARS = 10_000
# Where a refused state could be named, as the refusal says it: a dashboard's source (neutral: its
# configuration is the person's), or baton-agent's WORKFLOW.md.
SOURCE_STATES_HINT = "(the states the source names)"
WORKFLOW_STATES_HINT = "(name it in WORKFLOW.md's tracker.handoff_states or another state list)"

# (project id) -> its SourceRunner-like source (.config: SourceConfig, .tracker, .engine), or None.
SourceLookup = Callable[[str], Any]
# (project id, issue id) -> the running task made from that issue (as the API answers it), or None.
RunningLookup = Callable[[str, str], Awaitable[dict | None]]


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

# The request body as OpenAPI documents it (each route reads the raw body itself).
OPENAPI_EXTRA = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ToolCall.model_json_schema()}}}}


def issue_json(issue: Issue) -> dict:
    return {"id": issue.id, "identifier": issue.identifier, "title": issue.title, "description": issue.description,
            "state": issue.state, "url": issue.url, "labels": list(issue.labels), "priority": issue.priority}


def comment_json(comment: Comment) -> dict:
    return {"id": comment.id, "body": comment.body,
            "created_at": comment.created_at.isoformat() if comment.created_at else None}


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, headers={"WWW-Authenticate": "Bearer"})


def _validation(exc: ValidationError, prefix: str) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    message = "unknown field" if first.get("type") == "extra_forbidden" else str(first.get("msg", "invalid"))
    return ApiError(422, "validation_error", f"{where}: {message}" if where else message)


def known_identifier(source, issue_id: str) -> str:
    """ABC-1 when the sync knows the issue, else its id."""
    issues = getattr(getattr(source, "engine", None), "issues", None)
    issue = issues.get(issue_id) if isinstance(issues, dict) else None
    return getattr(issue, "identifier", None) or issue_id


async def call_tool(*, client: str, authorization: str, body: bytes, gate: ToolGate | None,
                    source_for: SourceLookup, running_task: RunningLookup,
                    states_hint: str = SOURCE_STATES_HINT) -> dict:
    """One tool call, checked (see the module's docstring): {"result": ...}, else ApiError.
    `client`: the peer's address; `authorization`: the Authorization header as sent;
    `states_hint`: how a refused state's message says where states are named."""
    # Checked here too (the middleware refuses other clients first): this must never answer
    # the network, whatever the middleware is configured with.
    if not loopback_client(client):
        raise ApiError(403, "forbidden_client", "this path answers only programs on this machine (loopback)")
    token = bearer(authorization)
    if not token:
        raise _invalid("missing capability token (Authorization: Bearer <token>)")
    try:
        scope = gate.verify(token) if gate is not None else None
    except ToolKeyError as exc:
        log.error("tracker tools key: %s", exc)
        raise ApiError(503, "tools_unavailable", f"the tracker tools cannot check tokens: {exc}") from None
    if scope is None:
        raise _invalid("the capability token is not valid (altered, or made with another key)")
    project_id, kind, issue_id = scope

    try:
        call = ToolCall.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise _validation(exc, "body") from None

    source = source_for(project_id)
    if source is None or not source.config.tools or source.config.kind != kind:
        raise ApiError(403, "out_of_scope", f"project {project_id!r} has no {kind} source with tools enabled")
    if call.issue is not None and call.issue != issue_id:
        raise ApiError(403, "out_of_scope", "this token is for another issue than the one asked")
    task = await running_task(project_id, issue_id)
    if task is None:
        raise ApiError(403, "out_of_scope", f"the task for {known_identifier(source, issue_id)} is not running")
    identifier = (task.get("source") or {}).get("identifier") or issue_id
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
        allowed = source.config.allowed_states()
        if arguments.state not in allowed:
            raise ApiError(403, "out_of_scope", f"{identifier} may be moved only to {', '.join(allowed)} "
                                                f"{states_hint}; not to {arguments.state!r}")

    log.info("tracker tool %s on %s (project %s)", call.tool, identifier, project_id)
    try:
        result = await _run(source.tracker, call.tool, issue_id, arguments)
    except RateLimited as exc:
        wait = max(1, math.ceil(exc.retry_after)) if exc.retry_after else None
        log.warning("tracker tool %s on %s (project %s): rate limited", call.tool, identifier, project_id)
        raise ApiError(503, "rate_limited", exc.message,
                       headers={"Retry-After": str(wait)} if wait else None) from None
    except TrackerError as exc:
        log.warning("tracker tool %s on %s (project %s) failed: %s", call.tool, identifier, project_id, exc.kind)
        raise ApiError(502, "tracker_error", exc.message) from None
    return {"result": result}


async def _run(tracker, tool: str, issue_id: str, arguments: BaseModel):
    if tool == "tracker_get_issue":
        return issue_json(await tracker.get_issue(issue_id))
    if tool == "tracker_list_comments":
        return [comment_json(c) for c in await tracker.comments(issue_id)]
    if tool == "tracker_add_comment":
        return comment_json(await tracker.add_comment(issue_id, arguments.body))
    issue = await tracker.get_issue(issue_id)
    return issue_json(await tracker.move(issue, arguments.state))
