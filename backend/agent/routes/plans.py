"""/agent/plans: plans of dependent tasks — create, edit, approve, reopen, run, delete, list.

The files are backend/plans/store.py's; running creates the tasks in one store write
(backend/plans/run.py); the follower (backend/plans/follow.py) moves executing plans on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response

from ...dependencies import DependencyError
from ...models import TASK_ID_RE, is_valid_task_id
from ...plans.run import delete_plan as delete_plan_file
from ...plans.run import run_plan
from ...plans.store import PlanError, PlanStore
from ...plans.views import NewPlan, PlanApproval, PlanEdit, PlanList, PlanRun, PlanView, plan_list, plan_view
from ...web.errors import ERROR_RESPONSES, ApiError
from ..deps import StoreDep

router = APIRouter(prefix="/agent/plans", tags=["plans"], responses=ERROR_RESPONSES)

PlanIdPath = Annotated[str, Path(
    description="A plan id: 1-32 characters of a-z and 0-9.",
    json_schema_extra={"pattern": TASK_ID_RE.pattern, "minLength": 1, "maxLength": 32})]


def _plans(request: Request) -> PlanStore:
    return request.app.state.plans


def check_plan_id(plan_id: str) -> None:
    if not is_valid_task_id(plan_id):
        raise ApiError(400, "invalid_id", "plan ids are 1-32 characters of a-z and 0-9")


def checked(fn, *args):
    """PlanError and a refused dependency as the API's error shape."""
    try:
        return fn(*args)
    except PlanError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    except DependencyError as exc:
        raise ApiError(422, "invalid_dependencies", str(exc)) from None


@router.get("", response_model=PlanList)
def list_plans(request: Request, store: StoreDep) -> dict:
    """Every plan, newest first, with its tasks' progress once it ran; files in plans/ that are not
    valid plans are listed under `invalid` with their problem (never changed by Baton)."""
    return plan_list(checked(_plans(request).listing), store)


@router.post("", status_code=201, response_model=PlanView)
def create_plan(body: NewPlan, request: Request, store: StoreDep) -> dict:
    """A new draft (plans/draft/<id>.json), revision 1."""
    return plan_view(checked(_plans(request).create, body.plan, body.chat_id), store)


@router.get("/{plan_id}", response_model=PlanView)
def get_plan(plan_id: PlanIdPath, request: Request, store: StoreDep) -> dict:
    check_plan_id(plan_id)
    return plan_view(checked(_plans(request).get, plan_id), store)


@router.put("/{plan_id}", response_model=PlanView)
def edit_plan(plan_id: PlanIdPath, body: PlanEdit, request: Request, store: StoreDep) -> dict:
    """Replace a draft's title, summary and tasks. Only a draft (409 plan_not_editable), only on
    its current revision (409 stale_plan)."""
    check_plan_id(plan_id)
    return plan_view(checked(_plans(request).edit, plan_id, body.revision, body.plan), store)


@router.post("/{plan_id}/approve", response_model=PlanView)
def approve_plan(plan_id: PlanIdPath, body: PlanApproval, request: Request, store: StoreDep) -> dict:
    """draft -> ready, for the revision the person looked at (another: 409 stale_plan)."""
    check_plan_id(plan_id)
    return plan_view(checked(_plans(request).approve, plan_id, body.revision), store)


@router.post("/{plan_id}/reopen", response_model=PlanView)
def reopen_plan(plan_id: PlanIdPath, request: Request, store: StoreDep) -> dict:
    """ready -> draft, to edit it again."""
    check_plan_id(plan_id)
    return plan_view(checked(_plans(request).reopen, plan_id), store)


@router.post("/{plan_id}/run", response_model=PlanView)
def start_plan(plan_id: PlanIdPath, request: Request, store: StoreDep,
               body: Annotated[PlanRun | None, Body()] = None) -> dict:
    """ready -> executing: every task is created in one write, with its dependencies (by ref) and
    the plan's id; `task_ids` maps refs to them. The plan is done when all are completed, failed
    when one fails or is cancelled (executing again once it is rerun or reopened). An optional
    body names the `revision` the person ran (another one: 409 stale_plan)."""
    check_plan_id(plan_id)
    revision = body.revision if body is not None else None
    return plan_view(checked(run_plan, _plans(request), store, plan_id, revision), store)


@router.delete("/{plan_id}", status_code=204, response_class=Response)
def delete_plan(plan_id: PlanIdPath, request: Request, store: StoreDep) -> Response:
    """Removes the plan file (not while executing, nor while ready with tasks a run interrupted
    before it was recorded created); tasks it created stay."""
    check_plan_id(plan_id)
    checked(delete_plan_file, _plans(request), store, plan_id)
    return Response(status_code=204)
