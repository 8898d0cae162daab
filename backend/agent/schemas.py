"""Request and response shapes of the agent API that are not store records themselves."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_serializer

from ..models import REPORT_KEY_RE, NewTask, Task

BULK_MAX = 100


class BulkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[NewTask] = Field(min_length=1, max_length=BULK_MAX)


CANCEL_REASON_MAX = 2000


class CancelRequest(BaseModel):
    """An optional body of POST /agent/tasks/{id}/cancel: why (kept as the task's cancel_reason)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=CANCEL_REASON_MAX)]

    @field_validator("reason")
    @classmethod
    def _text(cls, value: str) -> str:
        try:
            value.encode("utf-8")  # JSON may carry a lone surrogate, which the store cannot hold
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
        return value


class SourceReportRequest(BaseModel):
    """One side effect of a tracker sync engine on a task's issue (backend/sources/engine.py)."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, StringConstraints(pattern=REPORT_KEY_RE.pattern),
                   Field(description='What, and for which run: "started:1", "review:1", "done:1", "failed:2".')]
    action: Annotated[Literal["claim", "done", "release"], Field(
        description="claim: take it before acting (granted when absent, or claimed more than stale_seconds "
                    "ago; never once done); done: it happened; release: acting failed, drop the claim.")]
    by: Annotated[str, StringConstraints(min_length=1, max_length=100), Field(description="The engine's id.")]
    stale_seconds: Annotated[int, Field(ge=1, le=86400, description="When another's claim counts as abandoned.")] = 120


class SourceReportAnswer(BaseModel):
    granted: bool
    task: Task


class TaskList(BaseModel):
    tasks: list[Task]


class TasksByStatus(BaseModel):
    """Every status key is always present."""

    pending: list[Task]
    blocked: list[Task]
    plan_review: list[Task]
    in_progress: list[Task]
    review: list[Task]
    completed: list[Task]
    failed: list[Task]
    cancelled: list[Task]


class TaskBrief(BaseModel):
    """Another task as a task's detail names it; title and status are null for one that no
    longer exists."""

    id: str
    title: str | None
    status: str | None


class TaskDetail(Task):
    filename: str
    markdown: str
    dependencies: list[TaskBrief] = []  # the tasks in depends_on, in its order
    dependents: list[TaskBrief] = []  # live tasks that depend on this one


class Problem(BaseModel):
    code: str
    message: str


class RuntimeInfo(BaseModel):
    """One runtime configured for the project (agent.yaml `runtime:` or its own section)."""

    name: str
    default: bool  # tasks that choose no runtime run on this one
    model: str | None  # the section's configured model; null: the CLI's own default
    available: bool  # its CLI can be started now; tasks for it stay pending meanwhile
    problem: Problem | None  # why not (runtime_unavailable, with an install hint)
    cost: Literal["reported", "estimated"]  # estimated: computed by Baton from a price table


class RuntimeList(BaseModel):
    default: str
    runtimes: list[RuntimeInfo]


class Health(BaseModel):
    """`degraded` when anything in `problems` keeps the agent from doing its job."""

    status: Literal["ok", "degraded"]
    project: str
    project_id: str
    version: str
    uptime_seconds: float
    problems: list[Problem]
    workflow: dict[str, Any] | None = Field(default=None, description=(
        "The WORKFLOW.md this agent runs unattended (absent when none): {path, state: ok|invalid (an invalid "
        "edit keeps the last good version running), error: null|{code, message, at}, loaded_at, digest, "
        "tracker: the state of its tracker's sync (as a dashboard source reports it)}."))

    @model_serializer(mode="wrap")
    def _no_workflow_no_key(self, handler):
        # An agent without a WORKFLOW.md answers exactly as before.
        data = handler(self)
        if isinstance(data, dict) and data.get("workflow") is None:
            data.pop("workflow", None)
        return data


class WorktreeOut(BaseModel):
    path: str
    head: str | None
    branch: str | None
    bare: bool
    detached: bool
    locked: bool
    prunable: bool


class WorktreeList(BaseModel):
    worktrees: list[WorktreeOut]


class CommitOut(BaseModel):
    sha: str
    message: str
    author: str
    date: str


class EventPage(BaseModel):
    task_id: str
    events: list[dict]
    next_after: int


class RunningTask(BaseModel):
    task_id: str
    title: str
    phase: str
    port: int | None  # TASK_PORT during agent turns; None while the task waits in the merge queue
    started_at: str | None
    worker: str | None = None  # executor: dask: the Dask worker (box) running its current turn


class MergeQueueEntry(BaseModel):
    task_id: str
    title: str
    state: Literal["waiting", "testing", "passed", "landing"]
    on_top_of: str | None  # the candidate it is stacked on; None: directly on the base


class WorkerCounts(BaseModel):
    max: int
    busy: int


class DispatcherStatus(BaseModel):
    state: str
    workers: WorkerCounts
    running: list[RunningTask]
    queue_length: int
    merge_queue: list[MergeQueueEntry] = []  # tasks whose agent is done, in landing order
    counts: dict[str, int]
    ports_in_use: dict[str, str]
    owner: dict
    problems: list[Problem] = []  # e.g. runtime_unavailable: nothing is claimed meanwhile


class TaskSummary(BaseModel):
    """A board card (backend/changefeed.py: summary): null values and false booleans are left out.
    `sort`: within one status, cards go in ascending plain string order of it."""

    id: str
    title: str
    status: Literal["pending", "blocked", "plan_review", "in_progress", "review", "completed", "failed", "cancelled"]
    sort: str
    priority: str | None = None
    task_type: str | None = None
    runtime: str | None = None
    agent_runtime: str | None = None
    needs_plan_review: bool | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_activity_at: str | None = None
    runs: int | None = None  # times started in all, never reset
    attempts: int | None = None  # times started since the last rerun
    error_reason: str | None = None
    cost_usd: float | None = None
    cost_estimated: bool | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    landing: str | None = None  # auto | review | pr, when the task chose one
    inbox: int | None = None  # messages waiting for the agent's next turn
    pr: dict | None = None  # {number, state: open|closed|merged, checks: none|pending|success|failure}
    depends_on: list[str] | None = None  # ids of the tasks to complete first
    blocked_reason: str | None = None  # while blocked: which dependency failed or was cancelled
    plan_id: str | None = None  # the plan that created it
    cancel_reason: str | None = None  # why it was cancelled, when someone said (e.g. its issue was closed)
    source: dict | None = None  # {kind: linear|jira, id, identifier, url}: the tracker issue it came from
    run_on: str | None = None  # executor: dask: the box it is pinned to
    worker: str | None = None  # executor: dask: the Dask worker that ran (or runs) its latest turn


class UsageHour(BaseModel):
    hour: str  # the UTC hour's start, e.g. 2026-11-21T10:00:00Z
    cost_usd: float
    input_tokens: int
    output_tokens: int
    tasks: int


class Usage(BaseModel):
    """Non-empty UTC hour buckets of the last 8 days (live and archived tasks)."""

    hours: list[UsageHour]


class ChangeState(BaseModel):
    """As the change stream's `state` event: the health without `uptime_seconds`; the dispatcher and
    usage are the last ones known (null before any) while the store cannot be read."""

    health: dict[str, Any]
    dispatcher: DispatcherStatus | None
    usage: Usage | None


class Changes(BaseModel):
    """`reset`: `tasks` is the window (each status's first summaries), replacing what the
    client held; else the summaries changed since the cursor and the ids that left (archived)."""

    cursor: str
    revision: int
    reset: bool
    tasks: list[TaskSummary]
    removed: list[str]
    usage: Usage
    state: ChangeState | None = Field(default=None, description="Only with `state=true`.")


class SummaryPage(BaseModel):
    tasks: list[TaskSummary]
    more: bool
