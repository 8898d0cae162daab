"""A plan as stored in plans/<state>/<id>.json and as the API and the chat send it.

A plan's tasks name each other by `ref`; `depends_on` lists refs of the same plan. Validation
refuses a plan whose refs repeat, whose dependencies name no task of the plan, or that has a
cycle: a plan that validates can always be created as tasks in one write.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator,
)

from ..dependencies import find_cycle
from ..models import (
    CONTENT_MAX_BYTES, DEPENDS_MAX, TASK_ID_RE, TITLE_MAX_CHARS, TITLE_PATTERN, Landing, Priority, Ref, TaskType,
    _check_title, _TextRules, _utf8_size,
)

PLAN_FORMAT = 1  # the file format's version: a reader refuses a format it does not know
PLAN_TASKS_MAX = 200
PLAN_TITLE_MAX = TITLE_MAX_CHARS  # one line, as a task's title
PLAN_SUMMARY_MAX = 16 * 1024
PlanState = Literal["draft", "ready", "executing", "done", "failed"]
PLAN_STATES: tuple[str, ...] = ("draft", "ready", "executing", "done", "failed")
PlanId = Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]


class PlanTask(_TextRules):
    """One task of a plan: what NewTask takes, named by `ref`, depending on other refs."""

    model_config = ConfigDict(extra="forbid")

    ref: Ref
    # _TextRules checks title and content; the schema says the same (as NewTask's does).
    title: Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": TITLE_MAX_CHARS,
                                                   "pattern": TITLE_PATTERN})]
    content: Annotated[str, Field(json_schema_extra={"maxLength": CONTENT_MAX_BYTES})] = ""
    task_type: TaskType = "feature"
    priority: Priority = "medium"
    depends_on: Annotated[list[Ref], Field(max_length=DEPENDS_MAX)] = []
    needs_plan_review: StrictBool = False  # as NewTask: 0 and "yes" are refused, as the schema says
    landing: Landing | None = None


class PlanDraft(BaseModel):
    """What a person or the chat sends to make a plan (and the editable part of a plan)."""

    model_config = ConfigDict(extra="forbid")

    # One line like a task's title (surrounding spaces dropped); the schema states the same rule.
    title: Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": PLAN_TITLE_MAX,
                                                   "pattern": TITLE_PATTERN})]
    summary: Annotated[str, StringConstraints(max_length=PLAN_SUMMARY_MAX)] = ""
    tasks: Annotated[list[PlanTask], Field(min_length=1, max_length=PLAN_TASKS_MAX)]

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _check_title(value)

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: str) -> str:
        _utf8_size(value)  # a lone surrogate cannot be written to a file
        return value

    @model_validator(mode="after")
    def _graph(self) -> "PlanDraft":
        problems = graph_problems(self.tasks)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Plan(PlanDraft):
    """A stored plan. `revision` grows with every change (an edit names the revision it was made
    on; an older one is refused); `task_ids` maps refs to the tasks created when it ran."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = PLAN_FORMAT
    id: PlanId
    state: PlanState = "draft"
    revision: int = Field(default=1, ge=1)
    chat_id: str | None = None  # the conversation it came from
    created_at: AwareDatetime
    updated_at: AwareDatetime
    task_ids: dict[str, str] = Field(default_factory=dict)
    reason: str | None = None  # failed: which task failed and why


def graph_problems(tasks: list[PlanTask]) -> list[str]:
    """Why these tasks cannot be one plan: repeated refs, unknown dependencies, a cycle."""
    problems: list[str] = []
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.ref in index:
            problems.append(f"tasks[{i}].ref {task.ref!r} is also the ref of tasks[{index[task.ref]}]")
        else:
            index[task.ref] = i
    edges: list[list[int]] = []
    for i, task in enumerate(tasks):
        local = []
        for dep in task.depends_on:
            if dep == task.ref:
                problems.append(f"tasks[{i}] ({task.ref}) depends on itself")
            elif dep not in index:
                problems.append(f"tasks[{i}] ({task.ref}) depends on {dep!r}, which is no task of this plan")
            else:
                local.append(index[dep])
        edges.append(local)
    if not problems:
        cycle = find_cycle(edges)
        if cycle:
            problems.append("depends_on makes a cycle: " + " -> ".join(tasks[i].ref for i in cycle))
    return problems
