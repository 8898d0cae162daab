"""Response models of the board's routes, so the OpenAPI document says what the page reads."""

from __future__ import annotations

from pydantic import BaseModel

from ..agent.schemas import TaskSummary, Usage


class BoardProject(BaseModel):
    """A project on the board. `tasks`: each status's first summaries in `sort` order (null, with
    `tasks_error`, when the project cannot be read); `counts`: exact totals per status; `cursor`:
    where its change feed stands; `agent`: the baton-agent this dashboard runs for it (or null);
    `source`: the health of its issue tracker's sync (GET /api/projects/{p}/source; null without
    a `source:`)."""

    id: str
    name: str
    color: str | None
    description: str
    mode: str
    agent: dict | None
    source: dict | None = None
    healthy: bool
    reason: str | None
    health: dict | None
    dispatcher: dict | None
    counts: dict[str, int] | None
    problems: list[dict]
    usage: Usage | None
    tasks: dict[str, list[TaskSummary]] | None
    tasks_error: str | None
    cursor: str | None


class Board(BaseModel):
    """`cursor`: the combined cursor (`pid:epoch.rev,…`) to follow /api/board/stream from."""

    projects: list[BoardProject]
    cursor: str


class ProjectSummary(TaskSummary):
    project: str


class Unreachable(BaseModel):
    project: str
    reason: str


class BoardPage(BaseModel):
    """One column's next page across projects, merged by `sort`; `unavailable`: projects that
    could not be asked (their cards are missing from this page)."""

    tasks: list[ProjectSummary]
    more: bool
    unavailable: list[Unreachable]
