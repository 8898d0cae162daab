"""Shared vocabulary: task statuses, types, the Task record and the lifecycle rules."""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator,
)

# Anchored for pydantic's `pattern` (Rust regex: `$` is the very end). Python code must use
# fullmatch: there `$` also matches before a trailing newline, so "abc\n" would pass.
TASK_ID_RE = re.compile(r"^[a-z0-9]{1,32}$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

TITLE_MAX_CHARS = 200
CONTENT_MAX_BYTES = 256 * 1024
# A title is one line: no control, invisible-format (bidi, zero-width) or line/paragraph separator
# characters, and not only spaces. Written so that Python's re and JSON Schema's ECMA-262 regexes
# read it alike: the OpenAPI document states exactly what _check_title accepts.
_NOT_IN_TITLE = r"\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb"
_SPACES = r"\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
TITLE_PATTERN = f"^[^{_NOT_IN_TITLE}]*[^{_NOT_IN_TITLE}{_SPACES}][^{_NOT_IN_TITLE}]*$"
_TITLE_RE = re.compile(TITLE_PATTERN)


class TaskStatus(str, Enum):
    pending = "pending"
    blocked = "blocked"  # pending, but a dependency failed or was cancelled: waits for a person
    plan_review = "plan_review"
    in_progress = "in_progress"
    review = "review"  # tested, waiting for a person (landing: review) or an open pull request (landing: pr)
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


STATUSES: tuple[str, ...] = tuple(s.value for s in TaskStatus)

TaskType = Literal["feature", "bugfix", "refactor", "chore", "docs", "test"]
Priority = Literal["low", "medium", "high", "urgent"]
PRIORITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
RUN_ON_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a Dask resource name (a box): executors/dask/config.py
ErrorReason = Literal[
    "agent_error", "timeout", "stalled", "tests_failed", "tests_broken_on_base", "conflict", "push_failed",
    "agent_moved_refs", "approval_required", "runtime_unavailable", "internal",
    "pr_failed",  # the pull request could not be opened (GitHub refused, no token, no repository)
    "pr_closed",  # its pull request was closed without being merged
    # WORKFLOW.md (backend/workflow/): the prompt template failed for this task, a hook failed
    # (after_create, before_run), or max_turns turns ran while its issue stayed active.
    "template_error", "hook_failed", "max_turns",
    # executor: dask (backend/executors/): the worker running the turn crashed, froze or became
    # unreachable; the task went back to pending as a new attempt (failed after dask.max_attempts).
    "worker_lost",
]
# How a task's tested work reaches the base branch: at once (auto), after a person approves it on
# the board (review), or through a GitHub pull request that someone merges (pr).
Landing = Literal["auto", "review", "pr"]
# A runtime's name (checked against agent.yaml by the API) and a model's name as CLIs take it
# ("gpt-5.5", "claude-sonnet-4-5", "provider/model"): one argument, never an option.
RUNTIME_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
RuntimeChoice = Annotated[str, StringConstraints(pattern=RUNTIME_NAME_PATTERN)]
ModelChoice = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]

# Which status may follow which. Everything that changes a status goes through this table.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.pending: frozenset({TaskStatus.in_progress, TaskStatus.cancelled, TaskStatus.blocked}),
    # Only the store's dependency rules move a task in and out of blocked (dependencies.py);
    # a person may cancel it.
    TaskStatus.blocked: frozenset({TaskStatus.pending, TaskStatus.cancelled}),
    # approve -> pending (the work run, with the plan); revise -> pending (another planning turn)
    TaskStatus.plan_review: frozenset({TaskStatus.pending, TaskStatus.cancelled}),
    # in_progress -> pending is crash recovery / forced stop, not a user action. A planning run
    # ends in plan_review, a run whose landing waits for a person (or a pull request) in review.
    TaskStatus.in_progress: frozenset(
        {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled, TaskStatus.pending,
         TaskStatus.review, TaskStatus.plan_review}
    ),
    # approve or request changes -> pending (a landing run, or a turn with the person's comments);
    # reject -> cancelled; a pull request merged -> completed, closed unmerged -> failed.
    TaskStatus.review: frozenset(
        {TaskStatus.pending, TaskStatus.cancelled, TaskStatus.completed, TaskStatus.failed}
    ),
    TaskStatus.failed: frozenset({TaskStatus.pending}),
    TaskStatus.cancelled: frozenset({TaskStatus.pending}),
    # A follow-up message on a completed task starts another run.
    TaskStatus.completed: frozenset({TaskStatus.pending}),
}

MESSAGE_MAX_BYTES = 32 * 1024
COMMENT_MAX_CHARS = 4000
COMMENTS_MAX = 100
INBOX_MAX = 20  # messages waiting for a task's next turn
PLAN_MAX_CHARS = 64 * 1024
DEPENDS_MAX = 50  # dependencies of one task
# A local name for a task within one request or plan ("schema", "api-2"): what depends_on refers to
# before the tasks exist.
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Ref = Annotated[str, StringConstraints(pattern=REF_PATTERN)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_task_id() -> str:
    # 10 base-36 characters: ~51 bits, collisions are checked by the store anyway.
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def is_valid_task_id(value: str) -> bool:
    return isinstance(value, str) and TASK_ID_RE.fullmatch(value) is not None


class Owner(BaseModel):
    """Who holds a claimed task: enough to tell later whether that holder is still alive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    host: str
    instance: str


def _utf8_size(value: str) -> int:
    # JSON can carry a lone surrogate ("\ud800"), which no UTF-8 file or answer can hold.
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None


def _check_content(value: str) -> str:
    if _utf8_size(value) > CONTENT_MAX_BYTES:
        raise ValueError(f"must be at most {CONTENT_MAX_BYTES // 1024} KiB")
    return value


def _check_title(value: str) -> str:
    # Length first: it also bounds the regex's work. Surrounding spaces are dropped afterwards.
    if len(value) > TITLE_MAX_CHARS:
        raise ValueError(f"must be at most {TITLE_MAX_CHARS} characters")
    _utf8_size(value)
    if not _TITLE_RE.fullmatch(value):
        raise ValueError("must not be blank" if not value.strip() else "must be a single line of printable characters")
    return value.strip()


class _TextRules(BaseModel):
    """One set of rules for a task's title and content, whether a person sends them (NewTask)
    or they are read from the store (Task): a hand-written store cannot smuggle in what the API
    refuses."""

    @field_validator("title", check_fields=False)
    @classmethod
    def _title(cls, value: str) -> str:
        return _check_title(value)

    @field_validator("content", check_fields=False)
    @classmethod
    def _content(cls, value: str) -> str:
        return _check_content(value)


class LineComment(BaseModel):
    """A person's comment on one line of a task's diff (or on a whole file: line null)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    line: Annotated[int, Field(ge=1)] | None = None
    side: Literal["new", "old"] = "new"  # the line number counts in the new file, or the old one
    text: Annotated[str, StringConstraints(min_length=1, max_length=COMMENT_MAX_CHARS)]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        _utf8_size(value)  # any name git can hold (even with a newline in it), as Unicode text
        return value

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        _utf8_size(value)
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class NewMessage(BaseModel):
    """What a person sends a task: a follow-up message, changes requested on its diff, or a
    revision of its plan. Text, comments on lines, or both."""

    # The schema says what _something checks: text that is not only spaces, or a comment.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["text"], "properties": {"text": {"pattern": r"\S"}}},
        {"required": ["comments"], "properties": {"comments": {"minItems": 1}}}]})

    text: Annotated[str, Field(description=f"At most {MESSAGE_MAX_BYTES // 1024} KiB as UTF-8.",
                               json_schema_extra={"maxLength": MESSAGE_MAX_BYTES})] = ""
    comments: Annotated[list[LineComment], Field(max_length=COMMENTS_MAX)] = []

    @field_validator("text")
    @classmethod
    def _size(cls, value: str) -> str:
        if _utf8_size(value) > MESSAGE_MAX_BYTES:
            raise ValueError(f"must be at most {MESSAGE_MAX_BYTES // 1024} KiB")
        return value

    @model_validator(mode="after")
    def _something(self) -> "NewMessage":
        if not self.text.strip() and not self.comments:
            raise ValueError("a message needs text or at least one comment")
        return self


class HumanMessage(NewMessage):
    """A message waiting in a task's inbox for its next agent turn (delivered ones leave the
    inbox; the transcript keeps them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]
    # message: a follow-up; changes: changes requested in review; revise: a plan revision.
    kind: Literal["message", "changes", "revise"] = "message"
    at: AwareDatetime


class PullRequestChecks(BaseModel):
    """The pull request head's CI, from check runs and commit statuses together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["none", "pending", "success", "failure"] = "none"
    total: int = 0
    passed: int = 0
    failed: int = 0
    pending: int = 0


class PullRequestInfo(BaseModel):
    """A task's GitHub pull request (landing: pr), as last read from GitHub."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(gt=0)
    url: str
    state: Literal["open", "closed", "merged"] = "open"
    draft: bool = False
    head_sha: str | None = None
    merge_commit_sha: str | None = None
    mergeable_state: str | None = None  # clean, dirty, blocked, behind, unstable, unknown ...
    checks: PullRequestChecks | None = None
    checked_at: AwareDatetime | None = None


ATTACHMENT_NAME_MAX = 100  # characters (and at most 200 bytes as UTF-8); see backend/attachments.py
ATTACHMENTS_MAX = 20  # files on one task


def check_attachment_name(value: str) -> str:
    """What backend/attachments.clean_name produces, checked again on read: a hand-written store
    cannot name a path outside the task's attachment folder."""
    if (not value or len(value) > ATTACHMENT_NAME_MAX or len(value.encode("utf-8", "surrogatepass")) > 200
            or value.startswith(".") or ".." in value or value != value.strip()
            or any(c in value for c in '/\\:*?"<>|')
            or any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value)
            or unicodedata.normalize("NFC", value) != value):
        raise ValueError("not a sanitised attachment name")
    _utf8_size(value)
    return value


class Attachment(BaseModel):
    """A file a person attached to a task (stored under data/attachments/<task id>/<name>)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    size: int = Field(ge=0)
    content_type: str  # what the file is (image/png, text/markdown, application/pdf ...)
    image: bool = False  # png, jpeg, gif or webp: passed to runtimes that take images
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    at: AwareDatetime

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_attachment_name(value)


SOURCE_KINDS = ("linear", "jira")
SourceKind = Literal["linear", "jira"]
# A side effect the sync engine performs once per task run ("started:2", "done:1", "failed:3"):
# backend/sources/engine.py claims it on the task before acting, so two dashboards or a restart
# never comment twice.
REPORT_KEY_RE = re.compile(r"^[a-z_]{1,20}:[0-9]{1,6}$")
REPORTS_MAX = 200
_SOURCE_TEXT = r"^[\x21-\x7e]{1,100}$"  # printable ASCII, no spaces: tracker ids and keys


class SourceReport(BaseModel):
    """One side effect on the tracker (a state move and/or a comment) for one run of a task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["claimed", "done"]
    at: AwareDatetime  # when it was claimed, or done
    by: Annotated[str, StringConstraints(min_length=1, max_length=100)]  # which sync engine claimed it


class TaskSource(BaseModel):
    """The tracker issue a task was made from (Linear or Jira): set at create, never changed
    except `reports`, which only the sync engine writes (POST /agent/tasks/{id}/source/reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SourceKind
    id: Annotated[str, StringConstraints(pattern=_SOURCE_TEXT)]  # the tracker's own id (Linear UUID, Jira numeric id)
    identifier: Annotated[str, StringConstraints(pattern=_SOURCE_TEXT)]  # what people call it: ABC-12
    url: Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[\x21-\x7e]+$")] | None = None
    reports: Annotated[dict[Annotated[str, StringConstraints(pattern=REPORT_KEY_RE.pattern)], SourceReport],
                       Field(max_length=REPORTS_MAX)] = Field(default_factory=dict)


class ToolGrant(BaseModel):
    """How a task's tracker tools reach the tracker: a loopback URL of the process that holds the
    tracker's credentials and a capability token for this task's issue alone. Kept by the agent
    beside the store (data/tool-grants/), never in the task record or the API's answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, StringConstraints(max_length=500, pattern=r"^http://(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?/[\x21-\x7e]*$")]
    token: Annotated[str, StringConstraints(min_length=16, max_length=500, pattern=r"^[A-Za-z0-9._~-]+$")]


class Task(_TextRules):
    """One task as stored in data/dev-tasks.json. Frozen: change it with `model_copy(update=...)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _before_runtimes(cls, data: Any) -> Any:
        """A task stored before tasks chose runtimes (no `runtime` or `agent_runtime` key): its
        `model` is what Claude Code, then the only runtime, reported (any string), not a
        choice: kept as `agent_model`, so the store still loads and a rerun passes no --model."""
        if isinstance(data, dict) and "runtime" not in data and "agent_runtime" not in data and "model" in data:
            data = {**data, "agent_model": data.get("model"), "model": None}
            if data.get("session_id") or data.get("agent_model"):
                data["agent_runtime"] = "claude_code"
        return data

    @model_validator(mode="before")
    @classmethod
    def _before_runs(cls, data: Any) -> Any:
        """A task stored before `runs` existed was started at least `attempts` times."""
        if isinstance(data, dict) and "runs" not in data and isinstance(data.get("attempts"), int):
            data = {**data, "runs": data["attempts"]}
        return data

    id: Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]
    title: str
    content: str = ""
    task_type: TaskType = "feature"
    needs_plan_review: bool = False
    priority: Priority = "medium"
    landing: Landing | None = None  # None: the project's `landing` (agent.yaml)
    # Chosen for this task; None: the project's default runtime, the runtime's configured model.
    runtime: RuntimeChoice | None = None
    model: ModelChoice | None = None
    status: TaskStatus = TaskStatus.pending
    created_at: AwareDatetime
    updated_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    # How many times the task was started (claimed); a rerun starts counting again.
    attempts: int = Field(default=0, ge=0)
    # How many times it was started in all, across reruns: never reset (numbers each run's log).
    runs: int = Field(default=0, ge=0)
    # Filled by the dispatcher.
    branch: str | None = None
    worktree: str | None = None
    port: int | None = None
    owner: Owner | None = None
    agent_pid: int | None = None  # process group Baton started for the task (agent or tests), while it runs
    heartbeat_at: AwareDatetime | None = None
    lease_expires_at: AwareDatetime | None = None
    error_reason: ErrorReason | None = None
    error_message: str | None = None
    log_path: str | None = None
    session_id: str | None = None  # of the latest attempt, on agent_runtime
    agent_runtime: str | None = None  # the runtime that ran the latest attempt
    agent_model: str | None = None  # the model that runtime reported
    cost_usd: float | None = None
    cost_estimated: bool = False  # part of cost_usd was computed from a price table (Codex)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    num_turns: int | None = None
    last_activity_at: AwareDatetime | None = None
    result_text: str | None = None
    commit_sha: str | None = None
    no_changes: bool = False
    # The Idempotency-Key of the request that created the task: a repeat returns this task.
    idempotency_key: str | None = None
    # Plan review: the planning turn's answer, and whether a person approved it.
    plan: str | None = None
    plan_approved: bool = False
    # Review: the tested commit waiting for a person, and the base commit it was tested on.
    review_sha: str | None = None
    review_base: str | None = None
    # Approved by a person: the next run lands exactly this commit (rebased when the base moved).
    approved_sha: str | None = None
    base_sha: str | None = None  # landed: the base commit_sha was built on (its diff is base_sha..commit_sha)
    inbox: list[HumanMessage] = Field(default_factory=list)  # messages for the next agent turn
    pr: PullRequestInfo | None = None
    # Tasks that must be completed before this one is claimed (ids, resolved at create).
    depends_on: Annotated[list[Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]],
                          Field(max_length=DEPENDS_MAX)] = Field(default_factory=list)
    ref: Ref | None = None  # its local name in the request or plan that created it
    plan_id: Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)] | None = None
    blocked_reason: str | None = None  # while blocked: which dependency failed or was cancelled, in words
    # Files a person attached (backend/attachments.py); the bytes live under data/attachments/<id>/.
    attachments: Annotated[list[Attachment], Field(max_length=ATTACHMENTS_MAX)] = Field(default_factory=list)
    source: TaskSource | None = None  # the tracker issue this task was made from (backend/sources/)
    cancel_reason: str | None = None  # why it was cancelled, when someone said (e.g. its issue was closed)
    # executor: dask: the box this task's turns must run on (a resource its worker offers), and
    # the Dask worker that ran its latest turn (shown on its card).
    run_on: Annotated[str, StringConstraints(pattern=RUN_ON_RE)] | None = None
    worker: str | None = None

    @field_validator(
        "created_at", "updated_at", "started_at", "finished_at", "heartbeat_at", "lease_expires_at",
        "last_activity_at",
    )
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None


class NewTask(_TextRules):
    """What a person (or the API) supplies to create a task."""

    model_config = ConfigDict(extra="forbid")

    # _TextRules does the checking (with plain-words messages); these say it in the schema.
    title: Annotated[str, Field(
        description=f"One line, 1-{TITLE_MAX_CHARS} characters, not only spaces; surrounding spaces are dropped.",
        json_schema_extra={"minLength": 1, "maxLength": TITLE_MAX_CHARS, "pattern": TITLE_PATTERN})]
    content: Annotated[str, Field(
        description=f"At most {CONTENT_MAX_BYTES // 1024} KiB as UTF-8 (so at most {CONTENT_MAX_BYTES} characters).",
        json_schema_extra={"maxLength": CONTENT_MAX_BYTES})] = ""
    task_type: TaskType = "feature"
    needs_plan_review: StrictBool = False  # 0, "yes" and friends are refused, as the schema says
    priority: Priority = "medium"
    runtime: Annotated[RuntimeChoice | None, Field(
        description="A runtime configured for this project (see GET /agent/runtimes); null: the project's default.")] = None
    model: Annotated[ModelChoice | None, Field(
        description="The model, as the runtime's CLI names it; null: the runtime's configured model.")] = None
    landing: Annotated[Landing | None, Field(
        description="auto: land once tested; review: wait for a person's approval; pr: open a GitHub pull "
                    "request and complete when it is merged; null: the project's `landing`.")] = None
    run_on: Annotated[Annotated[str, StringConstraints(pattern=RUN_ON_RE)] | None, Field(
        description="executor: dask only: the box (a resource its Dask worker offers, e.g. box-a) this task's "
                    "agent turns must run on; null: any worker. A project whose executor is local answers "
                    "422 run_on_needs_dask.")] = None
    ref: Annotated[Ref | None, Field(
        description="A local name other tasks of the same request can list in depends_on.")] = None
    depends_on: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]], Field(
        max_length=DEPENDS_MAX,
        description="Tasks to complete first: ids of existing tasks, or refs of other tasks in the same "
                    "request. The task is claimed only once all of them are completed; a failed or "
                    "cancelled one makes it blocked.")] = []
    source: Annotated[TaskSource | None, Field(
        description="The tracker issue this task comes from (set by a source's sync engine); "
                    "`reports` must be empty at create.")] = None
    tool_grant: Annotated[ToolGrant | None, Field(
        description="Tracker tools for the agent: where to call and the capability token for this "
                    "task's issue. Kept apart from the task record; needs `source`.")] = None
