"""What the plans API answers, built the same way by the agent and the dashboard's local connector:
request bodies, a plan with its tasks' statuses, the list of plans with their progress."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..models import REF_PATTERN, TaskStatus
from ..store import TaskStore
from .model import Plan, PlanDraft, PlanState
from .store import Listing
from .tasks import TaskLookup

ChatId = Annotated[str, Field(pattern=REF_PATTERN, description="The conversation the plan came from.")]


class NewPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: PlanDraft
    chat_id: ChatId | None = None


class PlanRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1, description="The revision the person ran; another one: 409 stale_plan.")]


class PlanEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1, description="The revision the edit was made on; another one: 409 stale_plan.")]
    plan: PlanDraft


class PlanApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1, description="The revision the person approved; another one: 409 stale_plan.")]


class PlanView(Plan):
    """A plan and, once it ran, each task's status by ref (empty before)."""

    task_status: dict[str, TaskStatus]


class PlanSummary(BaseModel):
    id: str
    title: str
    state: PlanState
    revision: int
    chat_id: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    tasks: int
    progress: dict[str, int] | None = Field(description="How many of its tasks are in each status; null before it ran.")


class InvalidPlanFile(BaseModel):
    file: str
    problem: str


class PlanList(BaseModel):
    plans: list[PlanSummary]
    invalid: list[InvalidPlanFile]


def task_status(plan: Plan, tasks: TaskLookup) -> dict[str, str]:
    """{ref: status} of the tasks the plan created (a task gone from the store is left out)."""
    statuses: dict[str, str] = {}
    for ref, task_id in plan.task_ids.items():
        task = tasks.get(task_id)
        if task is not None:
            statuses[ref] = task.status.value
    return statuses


def plan_view(plan: Plan, store: TaskStore) -> dict:
    return {**plan.model_dump(mode="json"), "task_status": task_status(plan, TaskLookup(store))}


def summary(plan: Plan, tasks: TaskLookup) -> dict:
    progress = None
    if plan.task_ids:
        progress = {}
        for status in task_status(plan, tasks).values():
            progress[status] = progress.get(status, 0) + 1
    head = plan.model_dump(mode="json", include={"id", "title", "state", "revision", "chat_id", "created_at",
                                                 "updated_at"})
    return {**head, "tasks": len(plan.tasks), "progress": progress}


def plan_list(listing: Listing, store: TaskStore) -> dict:
    """One snapshot for every plan; each archived task read once."""
    tasks = TaskLookup(store)
    return {"plans": [summary(p, tasks) for p in listing.plans],
            "invalid": [{"file": i.file, "problem": i.problem} for i in listing.invalid]}
