"""/agent/tasks/{id}/diff: a task's changes, file by file, for review."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ... import diff as task_diffs
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.params import TaskIdPath
from ..deps import DispatcherDep, SettingsDep, StoreDep
from .tasks import check_id

router = APIRouter(prefix="/agent/tasks", tags=["tasks"], responses=ERROR_RESPONSES)


class DiffLine(BaseModel):
    kind: Literal["context", "add", "del"]
    old: int | None  # its line number in the old file (null on an added line)
    new: int | None
    text: str  # without the newline; clipped at 2,000 characters, ending with "…"


class DiffHunk(BaseModel):
    header: str
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    lines: list[DiffLine]


class DiffFile(BaseModel):
    path: str
    old_path: str | None
    status: Literal["added", "modified", "deleted", "renamed", "copied", "type_changed"]
    binary: bool
    additions: int
    deletions: int
    too_large: bool
    hunks: list[DiffHunk]


class DiffStats(BaseModel):
    files: int
    additions: int
    deletions: int


class DiffLimits(BaseModel):
    max_files: int
    max_file_bytes: int
    max_total_bytes: int


class Diff(BaseModel):
    task_id: str
    base: str
    head: str
    range: Literal["review", "branch", "landed"]
    files: list[DiffFile]
    stats: DiffStats
    truncated: bool
    limits: DiffLimits


@router.get("/{task_id}/diff", response_model=None, responses={200: {"model": Diff}})
def task_diff(
    task_id: TaskIdPath,
    store: StoreDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    context: Annotated[int, Query(ge=0, le=task_diffs.MAX_CONTEXT)] = 3,
) -> JSONResponse:
    """The task's changes: per-file unified hunks (`context` lines around each change) and
    stats. Range: a task in review, its tested commit on the base it was tested on; a landed
    task, what it landed; otherwise its branch since it left the base branch. No branch: 404
    `no_diff`. Hunks are left out (`too_large`) past 256 KiB of patch per file, 4 MiB in all and
    300 files (`truncated`); binary files have none."""
    check_id(task_id)
    task = store.get(task_id)  # archived tasks too
    try:
        answer = task_diffs.task_diff(settings.project_dir, dispatcher.ctx.git.base_ref, task, context)
    except task_diffs.NoDiff as exc:
        raise ApiError(404, "no_diff", str(exc)) from None
    # Not validated against the model on the way out: a big diff has ~100,000 lines.
    return JSONResponse(answer)
