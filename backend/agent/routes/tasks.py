"""/agent/tasks: list, detail, create, bulk create, rerun, cancel, a tracker sync's reports."""

from __future__ import annotations

import json
import re
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse

from ... import taskviews
from ...dependencies import DependencyError
from ...models import STATUSES, NewTask, Task, is_valid_task_id
from ...store import IdempotencyKeyReusedError, SourceError
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.params import ANY_STATUS, DetailStatusPath, FilenamePath, StatusPath, TaskIdPath
from ..deps import DispatcherDep, StoreDep
from ..runtimechoice import RUN_ON_NEEDS_DASK, unconfigured, unpinnable
from ..taskops import NotRunningHere, cancel_task as cancel
from ..schemas import (
    BulkCreate, CancelRequest, SourceReportAnswer, SourceReportRequest, TaskDetail, TaskList, TasksByStatus,
)

router = APIRouter(prefix="/agent/tasks", tags=["tasks"], responses=ERROR_RESPONSES)

_FILENAME_RE = re.compile(r"([a-z0-9]{1,32})(\.md)?")  # always fullmatch (no trailing newline)
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,100}")
IDEMPOTENCY_KEY_DOC = ("Optional. The same key with the same body answers the task(s) created the first time "
                       "(201 again, nothing new is created); with another body: 409 idempotency_key_reused. "
                       "1-100 printable ASCII characters.")
# For the OpenAPI document: HTTP drops a header value's surrounding spaces, so none are declared.
_IDEMPOTENCY_KEY_SCHEMA = {"pattern": r"^[\x21-\x7e]([\x20-\x7e]{0,98}[\x21-\x7e])?$", "minLength": 1, "maxLength": 100}
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DOC,
                                              json_schema_extra=_IDEMPOTENCY_KEY_SCHEMA)]


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
def list_status(status: StatusPath, store: StoreDep) -> Response:
    _check_status(status)
    return _json(taskviews.status_json(store.snapshot(), status))


@router.get("/{status}/{filename}", response_model=TaskDetail)
def task_detail(status: DetailStatusPath, filename: FilenamePath, store: StoreDep) -> TaskDetail:
    """One task by `<id>.md` (its mirror's name) or `<id>`, in that status or (`any`) in whichever
    it has; served from the store, never from disk."""
    if status != ANY_STATUS:
        _check_status(status)
    match = _FILENAME_RE.fullmatch(filename)
    if not match:
        raise ApiError(400, "invalid_filename", "expected <id>.md or <id>, with an id of a-z and 0-9")
    # An archived task (it left the live store, not the API) is found too.
    found = taskviews.detail(store.snapshot(), status, match.group(1), store.archive.get)
    if found is None:
        raise ApiError(404, "not_found", f"no {'' if status == ANY_STATUS else status + ' '}task with id "
                                         f"{match.group(1)!r}")
    return TaskDetail.model_validate(found)


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-100 printable ASCII characters")


def reused_key(exc: IdempotencyKeyReusedError) -> ApiError:
    return ApiError(409, "idempotency_key_reused", str(exc))


def invalid_source(exc: SourceError) -> ApiError:
    """A source with reports at create, or a tool grant without a source: nothing was created."""
    return ApiError(422, "validation_error", f"body.{exc.loc}: {exc.message}")


def invalid_dependencies(exc: DependencyError) -> ApiError:
    """depends_on naming no task, a ref used twice or a cycle: nothing was created."""
    return ApiError(422, "invalid_dependencies", str(exc))


def check_runtimes(tasks: list[NewTask], dispatcher, store, idempotency_key: str | None, bulk: bool = False) -> None:
    """A runtime this project does not configure: 422 naming the ones it does; a `run_on` when
    the project's agent turns run here (executor: local): 422 run_on_needs_dask. Not for the
    repeat of a create that already happened: it answers what was created then (the store
    decides), even if agent.yaml dropped that runtime since."""
    if idempotency_key is not None and store.created_with(idempotency_key):
        return
    problem = unconfigured(tasks, list(dispatcher.ctx.runtimes), bulk=bulk)
    if problem is not None:
        raise ApiError(422, "runtime_not_configured", problem)
    problem = unpinnable(tasks, dispatcher.config.executor, bulk=bulk)
    if problem is not None:
        raise ApiError(422, RUN_ON_NEEDS_DASK, problem)


@router.post("", status_code=201, response_model=Task)
def create_task(body: NewTask, store: StoreDep, dispatcher: DispatcherDep,
                idempotency_key: IdempotencyKey = None) -> Task:
    """`runtime` must be configured for this project (GET /agent/runtimes), else 422
    runtime_not_configured. `run_on` (a box) needs executor: dask in agent.yaml, else 422
    run_on_needs_dask. `depends_on` must name existing tasks, else 422 invalid_dependencies;
    a task whose dependency failed or was cancelled is created blocked. `source` (from a tracker
    sync) must come without reports; `tool_grant` needs `source` and is never answered back.
    A repeated Idempotency-Key answers its task even once archived."""
    check_idempotency_key(idempotency_key)
    check_runtimes([body], dispatcher, store, idempotency_key)
    try:
        return store.create(body, idempotency_key)
    except IdempotencyKeyReusedError as exc:
        raise reused_key(exc) from None
    except DependencyError as exc:
        raise invalid_dependencies(exc) from None
    except SourceError as exc:
        raise invalid_source(exc) from None


@router.post("/bulk", status_code=201, response_model=TaskList)
def create_bulk(body: BulkCreate, store: StoreDep, dispatcher: DispatcherDep,
                idempotency_key: IdempotencyKey = None) -> TaskList:
    """Creates every task or none (one naming an unconfigured runtime: none, 422 naming its index).
    `depends_on` may name existing tasks or the `ref` of other tasks in the request; an unknown
    name, a repeated ref or a cycle: none, 422 invalid_dependencies."""
    check_idempotency_key(idempotency_key)
    check_runtimes(body.tasks, dispatcher, store, idempotency_key, bulk=True)
    try:
        return TaskList(tasks=store.create_many(body.tasks, idempotency_key))
    except IdempotencyKeyReusedError as exc:
        raise reused_key(exc) from None
    except DependencyError as exc:
        raise invalid_dependencies(exc) from None
    except SourceError as exc:
        raise invalid_source(exc) from None


@router.post("/{task_id}/rerun", response_model=Task)
def rerun_task(task_id: TaskIdPath, store: StoreDep) -> Task:
    """A failed or cancelled task goes back to pending."""
    check_id(task_id)
    return store.rerun(task_id)


@router.post("/{task_id}/cancel", response_model=Task, responses={202: {"model": Task}})
def cancel_task(task_id: TaskIdPath, store: StoreDep, dispatcher: DispatcherDep,
                body: CancelRequest | None = None) -> Task | JSONResponse:
    """A pending task is cancelled; a running one is stopped (its branch kept) and cancelled.
    202 with the task still in_progress if stopping it took longer than 5 seconds. An optional
    body `{"reason"}` is kept as the task's `cancel_reason` (a rerun clears it)."""
    check_id(task_id)
    reason = body.reason if body is not None else None
    try:
        done = cancel(store, dispatcher, task_id, reason)
    except NotRunningHere as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from None
    if done.stopping:
        return JSONResponse(json.loads(done.task.model_dump_json()), status_code=202)
    return done.task


@router.post("/{task_id}/source/reports", response_model=SourceReportAnswer)
def source_report(task_id: TaskIdPath, body: SourceReportRequest, store: StoreDep) -> SourceReportAnswer:
    """For a tracker sync engine: claim a side effect on the task's issue before performing it
    (a state move, a comment), mark it done after, or release the claim when it failed. One
    write under the store lock, so of racing claims exactly one is granted. 404 for an unknown
    (or archived) task; 422 no_source for a task not made from a tracker issue."""
    check_id(task_id)
    try:
        granted, task = store.source_report(task_id, body.key, body.action, body.by, body.stale_seconds)
    except SourceError as exc:
        raise ApiError(422, "no_source", exc.message) from None
    return SourceReportAnswer(granted=granted, task=task)
