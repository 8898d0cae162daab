"""/agent/tasks: list, detail, create, bulk create, rerun, cancel."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from ... import taskviews
from ...models import STATUSES, NewTask, Task, TaskStatus, is_valid_task_id
from ...web.errors import ERROR_RESPONSES, ApiError
from ..deps import DispatcherDep, StoreDep
from ..schemas import BulkCreate, TaskDetail, TaskList, TasksByStatus

router = APIRouter(prefix="/agent/tasks", tags=["tasks"], responses=ERROR_RESPONSES)

_FILENAME_RE = re.compile(r"^([a-z0-9]{1,32})(\.md)?$")


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type="application/json")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ApiError(404, "not_found", f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")


def check_id(task_id: str) -> None:
    if not is_valid_task_id(task_id):
        raise ApiError(400, "invalid_id", "task ids are 1-32 characters of a-z and 0-9")


@router.get("", response_model=None, responses={200: {"model": TasksByStatus}})
def list_tasks(store: StoreDep) -> Response:
    """All tasks grouped by status; every status key is present."""
    return _json(taskviews.grouped_json(store.snapshot()))


@router.get("/{status}", response_model=None, responses={200: {"model": list[Task]}})
def list_status(status: str, store: StoreDep) -> Response:
    _check_status(status)
    return _json(taskviews.status_json(store.snapshot(), status))


@router.get("/{status}/{filename}", response_model=TaskDetail)
def task_detail(status: str, filename: str, store: StoreDep) -> TaskDetail:
    """One task by `<id>.md` (its mirror's name) or `<id>`; served from the store, never from disk."""
    _check_status(status)
    match = _FILENAME_RE.match(filename)
    if not match:
        raise ApiError(400, "invalid_filename", "expected <id>.md or <id>, with an id of a-z and 0-9")
    found = taskviews.detail(store.snapshot(), status, match.group(1))
    if found is None:
        raise ApiError(404, "not_found", f"no {status} task with id {match.group(1)!r}")
    return TaskDetail.model_validate(found)


@router.post("", status_code=201, response_model=Task)
def create_task(body: NewTask, store: StoreDep) -> Task:
    return store.create(body)


@router.post("/bulk", status_code=201, response_model=TaskList)
def create_bulk(body: BulkCreate, store: StoreDep) -> TaskList:
    """Creates every task or none."""
    return TaskList(tasks=store.create_many(body.tasks))


@router.post("/{task_id}/rerun", response_model=Task)
def rerun_task(task_id: str, store: StoreDep) -> Task:
    """A failed or cancelled task goes back to pending."""
    check_id(task_id)
    return store.rerun(task_id)


@router.post("/{task_id}/cancel", response_model=Task, responses={202: {"model": Task}})
def cancel_task(task_id: str, store: StoreDep, dispatcher: DispatcherDep) -> Task | JSONResponse:
    """A pending task is cancelled; a running one is stopped (its branch kept) and cancelled.
    202 with the task still in_progress if stopping it took longer than 5 seconds."""
    check_id(task_id)
    if store.get(task_id).status is TaskStatus.in_progress:
        if not dispatcher.cancel(task_id):
            raise ApiError(409, "invalid_transition", f"task {task_id} is running, but not in this agent's dispatcher")
        task = store.get(task_id)
        if task.status is TaskStatus.in_progress:
            return JSONResponse(json.loads(task.model_dump_json()), status_code=202)
        return task
    return store.cancel(task_id)
