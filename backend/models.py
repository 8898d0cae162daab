"""Shared vocabulary: task statuses, types, the Task record and the lifecycle rules."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

TASK_ID_RE = re.compile(r"^[a-z0-9]{1,32}$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

TITLE_MAX_CHARS = 200
CONTENT_MAX_BYTES = 256 * 1024


class TaskStatus(str, Enum):
    pending = "pending"
    plan_review = "plan_review"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


STATUSES: tuple[str, ...] = tuple(s.value for s in TaskStatus)

TaskType = Literal["feature", "bugfix", "refactor", "chore", "docs", "test"]
Priority = Literal["low", "medium", "high", "urgent"]
PRIORITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
ErrorReason = Literal[
    "agent_error", "timeout", "stalled", "tests_failed", "conflict", "push_failed", "internal"
]

# Which status may follow which. Everything that changes a status goes through this table.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.pending: frozenset({TaskStatus.in_progress, TaskStatus.cancelled, TaskStatus.plan_review}),
    TaskStatus.plan_review: frozenset({TaskStatus.pending, TaskStatus.cancelled}),
    # in_progress -> pending is crash recovery / forced stop, not a user action.
    TaskStatus.in_progress: frozenset(
        {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled, TaskStatus.pending}
    ),
    TaskStatus.failed: frozenset({TaskStatus.pending}),
    TaskStatus.cancelled: frozenset({TaskStatus.pending}),
    TaskStatus.completed: frozenset(),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_task_id() -> str:
    # 10 base-36 characters: ~51 bits, collisions are checked by the store anyway.
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def is_valid_task_id(value: str) -> bool:
    return bool(TASK_ID_RE.match(value))


class Owner(BaseModel):
    """Who holds a claimed task: enough to tell later whether that holder is still alive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    host: str
    instance: str


class Task(BaseModel):
    """One task as stored in data/dev-tasks.json. Frozen: change it with `model_copy(update=...)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]
    title: str
    content: str = ""
    task_type: TaskType = "feature"
    needs_plan_review: bool = False
    priority: Priority = "medium"
    status: TaskStatus = TaskStatus.pending
    created_at: AwareDatetime
    updated_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    # How many times the task was started (claimed); a rerun starts counting again.
    attempts: int = Field(default=0, ge=0)
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
    session_id: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    num_turns: int | None = None
    last_activity_at: AwareDatetime | None = None
    result_text: str | None = None
    commit_sha: str | None = None
    no_changes: bool = False

    @field_validator(
        "created_at", "updated_at", "started_at", "finished_at", "heartbeat_at", "lease_expires_at",
        "last_activity_at",
    )
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None


def _check_title(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if len(value) > TITLE_MAX_CHARS:
        raise ValueError(f"must be at most {TITLE_MAX_CHARS} characters")
    if not value.isprintable():  # also refuses line and paragraph separators
        raise ValueError("must be a single line of printable characters")
    return value


class NewTask(BaseModel):
    """What a person (or the API) supplies to create a task."""

    model_config = ConfigDict(extra="forbid")

    title: str
    content: str = ""
    task_type: TaskType = "feature"
    needs_plan_review: bool = False
    priority: Priority = "medium"

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _check_title(value)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        if len(value.encode("utf-8")) > CONTENT_MAX_BYTES:
            raise ValueError(f"must be at most {CONTENT_MAX_BYTES // 1024} KiB")
        return value
