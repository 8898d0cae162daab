"""/api/v1: Symphony's observability API (SPEC 13.7.2) over this agent's WORKFLOW.md runner.

GET /api/v1/state, GET /api/v1/{issue_identifier}, POST /api/v1/refresh; behind the agent's
token like /agent/*. An agent without a workflow answers 404 `workflow_not_configured` on all
three. The answers are built by backend/workflow/observe.py (its docstring says where each
figure comes from).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from ...web.errors import ERROR_RESPONSES, ApiError
from ...workflow import observe

router = APIRouter(prefix="/api/v1", tags=["api/v1"], responses=ERROR_RESPONSES)

# Linear's and Jira's identifiers (ENG-12, SHOP-7) always hold a digit, which also keeps `state`
# and `refresh` out (their own routes: GET /api/v1/refresh is a 405, not an issue lookup).
IDENTIFIER_PATTERN = r"^[A-Za-z0-9._~-]{0,99}[0-9][A-Za-z0-9._~-]{0,99}$"
IdentifierPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, max_length=100,
                                     description="The issue as people call it (ENG-12); matched as written, "
                                                 "then ignoring case.")]


class Tokens(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class RunningRow(BaseModel):
    issue_id: str
    issue_identifier: str
    issue_url: str | None
    state: str | None
    session_id: str | None
    turn_count: int
    last_event: str | None
    last_message: str | None
    started_at: str | None
    last_event_at: str | None
    tokens: Tokens


class RetryRow(BaseModel):
    issue_id: str
    issue_identifier: str
    issue_url: str | None
    attempt: int
    due_at: str | None
    error: str | None


class Totals(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    seconds_running: float
    cost_usd: float


class Counts(BaseModel):
    running: int
    retrying: int


class RateLimits(BaseModel):
    tracker: dict[str, Any] | None
    agent: dict[str, Any] | None


class StateAnswer(BaseModel):
    generated_at: str
    counts: Counts
    running: list[RunningRow]
    retrying: list[RetryRow]
    codex_totals: Totals
    rate_limits: RateLimits


class Workspace(BaseModel):
    path: str | None


class Attempts(BaseModel):
    restart_count: int
    current_retry_attempt: int


class IssueRunning(BaseModel):
    state: str | None
    session_id: str | None
    turn_count: int
    last_event: str | None
    last_message: str | None
    started_at: str | None
    last_event_at: str | None
    tokens: Tokens


class IssueRetry(BaseModel):
    attempt: int
    due_at: str | None
    error: str | None


class LogRef(BaseModel):
    label: str
    path: str
    url: str | None


class Logs(BaseModel):
    codex_session_logs: list[LogRef]


class RecentEvent(BaseModel):
    at: str | None
    event: str
    message: str


class Tracked(BaseModel):
    task_id: str
    task_status: str
    branch: str | None
    commit_sha: str | None
    cost_usd: float | None
    runtime: str | None
    session_id: str | None
    cancel_reason: str | None


class IssueAnswer(BaseModel):
    issue_identifier: str
    issue_id: str
    issue_url: str | None
    status: Literal["running", "retrying", "pending", "review", "completed", "failed", "cancelled", "blocked",
                    "plan_review"]
    workspace: Workspace
    attempts: Attempts
    running: IssueRunning | None
    retry: IssueRetry | None
    logs: Logs
    recent_events: list[RecentEvent]
    last_error: str | None
    tracked: Tracked


class RefreshAnswer(BaseModel):
    queued: bool
    coalesced: bool
    requested_at: str
    operations: list[str]


def _runner(request: Request) -> Any:
    runner = getattr(request.app.state, "workflow", None)
    if runner is None:
        raise ApiError(404, "workflow_not_configured",
                       "this agent runs no WORKFLOW.md: /api/v1 answers only for a workflow's issues")
    return runner


@router.get("/state", response_model=StateAnswer)
def state(request: Request) -> dict:
    """Running sessions, the retry queue, token, cost and runtime totals, the latest rate limits."""
    return observe.state(_runner(request))


@router.post("/refresh", response_model=RefreshAnswer, status_code=202)
async def refresh(request: Request) -> dict:
    """Queue a tracker poll and a reconcile now (any body is ignored); `coalesced` when one was
    already queued and had not started."""
    # In the event loop: the runner's trigger is an asyncio event of this loop.
    queued = _runner(request).refresh()
    return {"queued": True, "coalesced": not queued, "requested_at": observe.iso(datetime.now(timezone.utc)),
            "operations": ["poll", "reconcile"]}


@router.get("/{issue_identifier}", response_model=IssueAnswer)
def issue(issue_identifier: IdentifierPath, request: Request) -> dict:
    """One issue's task: status, workspace, attempts, the running session or retry, recent events."""
    found = observe.issue(_runner(request), issue_identifier)
    if found is None:
        raise ApiError(404, "issue_not_found",
                       f"no task of this agent's workflow is for the issue {issue_identifier!r}")
    return found
