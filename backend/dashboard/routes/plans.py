"""/api/projects/{project_id}/plans...: the agent's plans API (backend/agent/routes/plans.py),
relayed to each project's connector with the same bodies, answers and errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from ...agent.routes.plans import PlanIdPath, check_plan_id
from ...plans.views import NewPlan, PlanApproval, PlanEdit, PlanList, PlanRun, PlanView
from ...web.errors import ERROR_RESPONSES
from .api import connector_for

router = APIRouter(prefix="/api/projects/{project_id}/plans", tags=["plans"], responses=ERROR_RESPONSES)


@router.get("", response_model=None, responses={200: {"model": PlanList}})
async def list_plans(project_id: str, request: Request) -> dict:
    """Every plan of the project, newest first, and the files in plans/ that are not valid plans."""
    return await connector_for(request, project_id).list_plans()


@router.post("", status_code=201, response_model=None, responses={201: {"model": PlanView}})
async def create_plan(project_id: str, body: NewPlan, request: Request) -> dict:
    """A new draft plan (validated: unique refs, dependencies within the plan, no cycle)."""
    return await connector_for(request, project_id).create_plan(body.model_dump(mode="json"))


@router.get("/{plan_id}", response_model=None, responses={200: {"model": PlanView}})
async def get_plan(project_id: str, plan_id: PlanIdPath, request: Request) -> dict:
    check_plan_id(plan_id)
    return await connector_for(request, project_id).get_plan(plan_id)


@router.put("/{plan_id}", response_model=None, responses={200: {"model": PlanView}})
async def edit_plan(project_id: str, plan_id: PlanIdPath, body: PlanEdit, request: Request) -> dict:
    """A draft's new title, summary and tasks, made on its current `revision`."""
    check_plan_id(plan_id)
    return await connector_for(request, project_id).update_plan(plan_id, body.model_dump(mode="json"))


@router.post("/{plan_id}/approve", response_model=None, responses={200: {"model": PlanView}})
async def approve_plan(project_id: str, plan_id: PlanIdPath, body: PlanApproval, request: Request) -> dict:
    check_plan_id(plan_id)
    return await connector_for(request, project_id).approve_plan(plan_id, body.model_dump(mode="json"))


@router.post("/{plan_id}/reopen", response_model=None, responses={200: {"model": PlanView}})
async def reopen_plan(project_id: str, plan_id: PlanIdPath, request: Request) -> dict:
    check_plan_id(plan_id)
    return await connector_for(request, project_id).reopen_plan(plan_id)


@router.post("/{plan_id}/run", response_model=None, responses={200: {"model": PlanView}})
async def run_plan(project_id: str, plan_id: PlanIdPath, request: Request,
                   body: Annotated[PlanRun | None, Body()] = None) -> dict:
    """ready -> executing: its tasks are created on the project, with their dependencies. An
    optional body names the `revision` the person ran (another one: 409 stale_plan)."""
    check_plan_id(plan_id)
    return await connector_for(request, project_id).run_plan(plan_id, body.model_dump(mode="json") if body else None)


@router.delete("/{plan_id}", status_code=204, response_class=Response)
async def delete_plan(project_id: str, plan_id: PlanIdPath, request: Request) -> Response:
    check_plan_id(plan_id)
    await connector_for(request, project_id).delete_plan(plan_id)
    return Response(status_code=204)
